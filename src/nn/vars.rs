//! Named parameters, created on first use while a model graph is built
//! (like candle's `VarBuilder`): `vb.pp("encoder").get("embed_tokens.embedding", ...)`.
//!
//! The model code asks for each weight by its flax name; the builder makes it a
//! graph parameter and remembers its shape and initialiser, so the same model
//! function serves initialisation, loading and every compiled program.

use super::init::Init;
use crate::graph::{Graph, GraphError, Result, Tensor, TensorType};
use crate::DType;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

/// One model parameter.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamSpec {
    pub name: String,
    pub ty: TensorType,
    pub init: Init,
}

#[derive(Default)]
struct Registry {
    specs: Vec<ParamSpec>,
    tensors: BTreeMap<String, Tensor>,
    /// Scanned layer stacks: each entry names one tensor of every layer, in layer order.
    stacks: Vec<Vec<String>>,
    /// Parameters were supplied up front (see [`VarBuilder::from_tensors`]): asking for another is an error.
    bound: bool,
}

/// Hands out parameters under a name prefix.
#[derive(Clone)]
pub struct VarBuilder {
    graph: Graph,
    prefix: String,
    /// dtype parameters are stored in (the master copy).
    dtype: DType,
    /// No gradient will be taken of what is built (see [`VarBuilder::forward_only`]).
    forward_only: bool,
    registry: Rc<RefCell<Registry>>,
}

impl VarBuilder {
    pub fn new(graph: &Graph, dtype: DType) -> Self {
        VarBuilder { graph: graph.clone(), prefix: String::new(), dtype, forward_only: false, registry: Rc::default() }
    }

    /// This builder, promising that no gradient will be taken of what the
    /// model code builds with it (evaluation, sampling): layers then skip
    /// what only a backward pass reads, such as the stores of a scanned stack.
    pub fn forward_only(self) -> Self {
        VarBuilder { forward_only: true, ..self }
    }

    /// Whether [`Self::forward_only`] was promised.
    pub fn is_forward_only(&self) -> bool {
        self.forward_only
    }

    /// A builder that hands out the given tensors by name instead of creating
    /// parameters: for running model code inside a loop body, where the
    /// weights arrive as the body's arguments.
    pub fn from_tensors(graph: &Graph, dtype: DType, named: impl IntoIterator<Item = (String, Tensor)>) -> Self {
        let mut reg = Registry { bound: true, ..Default::default() };
        for (name, t) in named {
            reg.specs.push(ParamSpec { name: name.clone(), ty: t.ty().clone(), init: Init::Zeros });
            reg.tensors.insert(name, t);
        }
        VarBuilder { graph: graph.clone(), prefix: String::new(), dtype, forward_only: false, registry: Rc::new(RefCell::new(reg)) }
    }

    /// A builder whose names are prefixed by `name.`.
    pub fn pp(&self, name: &str) -> Self {
        let prefix = if self.prefix.is_empty() { name.to_string() } else { format!("{}.{name}", self.prefix) };
        VarBuilder { prefix, ..self.clone() }
    }

    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// The dtype parameters are stored in.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn path(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.prefix)
        }
    }

    /// The parameter `name` of `shape`, created on first request. Asking again
    /// with another shape is an error naming the parameter.
    pub fn get(&self, name: &str, shape: &[i64], init: Init) -> Result<Tensor> {
        let full = self.path(name);
        let mut reg = self.registry.borrow_mut();
        if let Some(t) = reg.tensors.get(&full) {
            if t.shape() != shape {
                return Err(GraphError::Invalid(format!(
                    "parameter '{full}' was created with shape {:?} and requested again with {shape:?}",
                    t.shape()
                )));
            }
            return Ok(t.clone());
        }
        if reg.bound {
            return Err(GraphError::Invalid(format!("parameter '{full}' {shape:?} was not among the tensors given to this builder")));
        }
        let t = self.graph.param(&full, self.dtype, shape);
        reg.specs.push(ParamSpec { name: full.clone(), ty: TensorType::new(self.dtype, shape), init });
        reg.tensors.insert(full, t.clone());
        Ok(t)
    }

    /// Every parameter created so far, in creation order (= argument order).
    pub fn specs(&self) -> Vec<ParamSpec> {
        self.registry.borrow().specs.clone()
    }

    /// The graph tensors of the parameters, in creation order.
    pub fn tensors(&self) -> Vec<Tensor> {
        let reg = self.registry.borrow();
        reg.specs.iter().map(|s| reg.tensors[&s.name].clone()).collect()
    }

    /// Records that the parameters `names` (one per layer, in layer order)
    /// are one tensor of a scanned layer stack, so that an optimizer may
    /// update them in one loop too.
    pub fn record_stack(&self, names: Vec<String>) {
        self.registry.borrow_mut().stacks.push(names);
    }

    /// The scanned layer stacks recorded so far (see
    /// [`record_stack`](Self::record_stack)) as positions in [`specs`](Self::specs).
    pub fn stack_indices(&self) -> Vec<Vec<usize>> {
        let reg = self.registry.borrow();
        let at: BTreeMap<&str, usize> = reg.specs.iter().enumerate().map(|(k, s)| (s.name.as_str(), k)).collect();
        reg.stacks.iter().map(|names| names.iter().map(|n| at[n.as_str()]).collect()).collect()
    }

    /// Total number of scalar parameters.
    pub fn num_params(&self) -> i64 {
        self.registry.borrow().specs.iter().map(|s| s.ty.numel()).sum()
    }
}
