//! The graph being built and the tensors flowing through it.
//!
//! A [`Graph`] is one function under construction: parameters, then nodes in
//! creation order (which is a topological order). A [`Tensor`] is one output
//! of one node; ops on tensors append nodes after checking shapes.

use super::error::{GraphError, Result};
use super::ops::param::{Constant, Parameter};
use super::primitive::Primitive;
use super::types::TensorType;
use crate::dtype::DType;
use crate::host::HostTensor;
use std::cell::RefCell;
use std::rc::Rc;

/// One output of one node.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub struct ValueId {
    pub node: usize,
    pub index: usize,
}

pub(crate) struct Node {
    pub prim: Rc<dyn Primitive>,
    pub inputs: Vec<ValueId>,
    pub outputs: Vec<TensorType>,
}

pub(crate) struct GraphData {
    pub name: String,
    pub nodes: Vec<Node>,
    /// Node index of each parameter, in signature order.
    pub params: Vec<usize>,
}

/// A function being built. Cloning gives another handle to the same graph.
#[derive(Clone)]
pub struct Graph {
    pub(crate) data: Rc<RefCell<GraphData>>,
}

impl Graph {
    pub fn new(name: &str) -> Graph {
        let data = GraphData {
            name: name.to_string(),
            nodes: Vec::new(),
            params: Vec::new(),
        };
        Graph { data: Rc::new(RefCell::new(data)) }
    }

    pub fn name(&self) -> String {
        self.data.borrow().name.clone()
    }

    pub fn same(&self, other: &Graph) -> bool {
        Rc::ptr_eq(&self.data, &other.data)
    }

    /// Adds a parameter (an argument of the compiled program).
    pub fn param(&self, name: &str, dtype: DType, shape: &[i64]) -> Tensor {
        let ty = TensorType::new(dtype, shape);
        let index = self.data.borrow().params.len();
        let prim = Rc::new(Parameter { index, name: name.to_string(), ty: ty.clone() });
        let t = self.push(prim, vec![], vec![ty]).remove(0);
        self.data.borrow_mut().params.push(t.id.node);
        t
    }

    pub fn param_like(&self, name: &str, ty: &TensorType) -> Tensor {
        self.param(name, ty.dtype, &ty.shape)
    }

    /// The parameters in signature order.
    pub fn params(&self) -> Vec<Tensor> {
        let d = self.data.borrow();
        d.params.iter().map(|&n| Tensor { graph: self.clone(), id: ValueId { node: n, index: 0 }, ty: d.nodes[n].outputs[0].clone() }).collect()
    }

    pub fn param_types(&self) -> Vec<TensorType> {
        self.params().iter().map(|t| t.ty().clone()).collect()
    }

    pub fn param_names(&self) -> Vec<String> {
        let d = self.data.borrow();
        d.params
            .iter()
            .map(|&n| {
                d.nodes[n].prim.as_any().downcast_ref::<Parameter>().map(|p| p.name.clone()).unwrap_or_default()
            })
            .collect()
    }

    /// A constant array.
    pub fn constant(&self, value: HostTensor) -> Tensor {
        let ty = TensorType::new(value.dtype, &value.shape);
        self.push(Rc::new(Constant { value }), vec![], vec![ty]).remove(0)
    }

    /// A constant filled with `value` (converted to `dtype`).
    pub fn full(&self, value: f64, dtype: DType, shape: &[i64]) -> Tensor {
        let scalar = HostTensor::from_f64(dtype, &[], &[value]).expect("scalar");
        let c = self.constant(scalar);
        if shape.is_empty() {
            c
        } else {
            c.broadcast_in_dim(shape, &[]).expect("broadcast of a scalar")
        }
    }

    pub fn scalar(&self, value: f64, dtype: DType) -> Tensor {
        self.full(value, dtype, &[])
    }

    pub fn zeros(&self, dtype: DType, shape: &[i64]) -> Tensor {
        self.full(0.0, dtype, shape)
    }

    /// Applies a primitive: checks every input is from this graph, infers the
    /// output types and appends the node.
    pub fn apply<P: Primitive>(&self, prim: P, inputs: &[&Tensor]) -> Result<Vec<Tensor>> {
        self.apply_rc(Rc::new(prim), inputs)
    }

    pub fn apply_rc(&self, prim: Rc<dyn Primitive>, inputs: &[&Tensor]) -> Result<Vec<Tensor>> {
        for (i, t) in inputs.iter().enumerate() {
            if !t.graph.same(self) {
                return Err(GraphError::op(
                    prim.name(),
                    format!(
                        "input {i} belongs to graph '{}', not to '{}': pass values into a sub-graph as its arguments",
                        t.graph.name(),
                        self.name()
                    ),
                ));
            }
        }
        let types: Vec<TensorType> = inputs.iter().map(|t| t.ty.clone()).collect();
        let outputs = prim.infer(&types)?;
        Ok(self.push(prim, inputs.iter().map(|t| t.id).collect(), outputs))
    }

    /// Like [`apply`](Self::apply) for single-output primitives.
    pub fn apply1<P: Primitive>(&self, prim: P, inputs: &[&Tensor]) -> Result<Tensor> {
        let mut out = self.apply(prim, inputs)?;
        if out.len() != 1 {
            return Err(GraphError::Invalid(format!("expected one output, got {}", out.len())));
        }
        Ok(out.remove(0))
    }

    fn push(&self, prim: Rc<dyn Primitive>, inputs: Vec<ValueId>, outputs: Vec<TensorType>) -> Vec<Tensor> {
        let mut d = self.data.borrow_mut();
        let node = d.nodes.len();
        d.nodes.push(Node { prim, inputs, outputs: outputs.clone() });
        drop(d);
        outputs.into_iter().enumerate().map(|(index, ty)| Tensor { graph: self.clone(), id: ValueId { node, index }, ty }).collect()
    }

    pub fn num_nodes(&self) -> usize {
        self.data.borrow().nodes.len()
    }

    pub(crate) fn tensor(&self, id: ValueId) -> Tensor {
        let ty = self.data.borrow().nodes[id.node].outputs[id.index].clone();
        Tensor { graph: self.clone(), id, ty }
    }
}

/// A value in a [`Graph`]: one output of one node, with its static type.
#[derive(Clone)]
pub struct Tensor {
    pub(crate) graph: Graph,
    pub(crate) id: ValueId,
    pub(crate) ty: TensorType,
}

impl Tensor {
    pub fn ty(&self) -> &TensorType {
        &self.ty
    }
    pub fn dtype(&self) -> DType {
        self.ty.dtype
    }
    pub fn shape(&self) -> &[i64] {
        &self.ty.shape
    }
    pub fn rank(&self) -> usize {
        self.ty.shape.len()
    }
    pub fn graph(&self) -> &Graph {
        &self.graph
    }
    pub fn id(&self) -> ValueId {
        self.id
    }
    /// Name of the primitive that produced this tensor.
    pub fn op_name(&self) -> String {
        self.graph.data.borrow().nodes[self.id.node].prim.name()
    }
    /// Size of dimension `axis` (negative counts from the end).
    pub fn dim(&self, axis: i64) -> Result<i64> {
        let a = self.axis(axis)?;
        Ok(self.ty.shape[a])
    }
    /// Normalises a possibly negative axis.
    pub fn axis(&self, axis: i64) -> Result<usize> {
        let r = self.rank() as i64;
        let a = if axis < 0 { axis + r } else { axis };
        if a < 0 || a >= r {
            return Err(GraphError::Invalid(format!("axis {axis} is out of range for a tensor of shape {:?}", self.ty.shape)));
        }
        Ok(a as usize)
    }
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tensor({:?} from {})", self.ty, self.op_name())
    }
}
