//! A finished sub-graph with chosen outputs: while-loop bodies and conditions.

use super::error::{GraphError, Result};
use super::tensor::{Graph, Tensor};
use super::types::TensorType;

/// A graph plus the tensors it returns.
#[derive(Clone)]
pub struct Function {
    pub graph: Graph,
    pub outputs: Vec<Tensor>,
}

impl Function {
    /// Builds a function of `arg_types` with `body`.
    pub fn build(
        name: &str,
        arg_types: &[TensorType],
        body: impl FnOnce(&[Tensor]) -> Result<Vec<Tensor>>,
    ) -> Result<Function> {
        let graph = Graph::new(name);
        let args: Vec<Tensor> =
            arg_types.iter().enumerate().map(|(i, t)| graph.param(&format!("arg{i}"), t.dtype, &t.shape)).collect();
        let outputs = body(&args)?;
        if let Some(o) = outputs.iter().find(|o| !o.graph.same(&graph)) {
            return Err(GraphError::Invalid(format!(
                "function '{name}' returns a tensor of graph '{}': pass outer values in as arguments",
                o.graph.name()
            )));
        }
        Ok(Function { graph, outputs })
    }

    pub fn output_types(&self) -> Vec<TensorType> {
        self.outputs.iter().map(|t| t.ty().clone()).collect()
    }

    pub fn arg_types(&self) -> Vec<TensorType> {
        self.graph.param_types()
    }

    /// Whether output `output` is argument `arg` returned unchanged (a loop
    /// invariant, when the function is a loop body).
    pub fn passes_through(&self, output: usize, arg: usize) -> bool {
        let Some(out) = self.outputs.get(output) else { return false };
        let data = self.graph.data.borrow();
        let prim = &data.nodes[out.id.node].prim;
        prim.as_any().downcast_ref::<super::ops::param::Parameter>().is_some_and(|p| p.index == arg)
    }
}

impl std::fmt::Debug for Function {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Function({}: {:?} -> {:?})", self.graph.name(), self.arg_types(), self.output_types())
    }
}
