//! Lowering a graph to a StableHLO module in MLIR text, the form PJRT compiles.

use super::error::{GraphError, Result};
use super::function::Function;
use super::ops::param::Parameter;
use super::tensor::{Graph, Tensor, ValueId};
use super::types::TensorType;
use std::collections::HashMap;
use std::fmt::Write;

/// Per-program facts that go into the module text.
#[derive(Clone, Debug, Default)]
pub struct ModuleOptions {
    /// Parameters whose buffers the program may reuse for its outputs.
    pub donate: Vec<usize>,
    /// `mhlo.sharding` strings per parameter (SPMD programs), e.g. `{devices=[8,1]<=[8]}`.
    pub arg_shardings: Vec<Option<String>>,
    /// `mhlo.sharding` strings per result.
    pub result_shardings: Vec<Option<String>>,
    pub num_replicas: usize,
    pub num_partitions: usize,
}

/// State shared while lowering one module: fresh SSA names.
pub struct LowerCx {
    counter: usize,
}

impl LowerCx {
    pub fn fresh(&mut self) -> String {
        self.counter += 1;
        format!("%v{}", self.counter)
    }

    /// A region `{ ^bb0(args): body; "stablehlo.return"(results) }` holding `f`.
    pub fn region(&mut self, f: &Function) -> Result<String> {
        let args: Vec<String> = (0..f.graph.params().len()).map(|_| self.fresh()).collect();
        let types = f.arg_types();
        let mut text = String::from("{\n  ^bb0(");
        let decl: Vec<String> = args.iter().zip(&types).map(|(a, t)| format!("{a}: {}", t.mlir())).collect();
        text.push_str(&decl.join(", "));
        text.push_str("):\n");
        let results = self.body(&f.graph, &f.outputs, &args, &mut text)?;
        let out_types: Vec<String> = f.outputs.iter().map(|t| t.ty().mlir()).collect();
        let _ = writeln!(text, "    \"stablehlo.return\"({}) : ({}) -> ()", results.join(", "), out_types.join(", "));
        text.push('}');
        Ok(text)
    }

    /// A region for a scalar binary reduction `op` on `dtype` (reduce, all_reduce, scatter).
    pub fn scalar_region(&mut self, op: &str, ty: &TensorType) -> String {
        let (a, b, r) = (self.fresh(), self.fresh(), self.fresh());
        let t = ty.mlir();
        format!(
            "{{\n  ^bb0({a}: {t}, {b}: {t}):\n    {r} = \"{op}\"({a}, {b}) : ({t}, {t}) -> {t}\n    \"stablehlo.return\"({r}) : ({t}) -> ()\n}}"
        )
    }

    /// Emits the nodes of `graph` needed for `outputs` into `text`, with the
    /// graph's parameters bound to `args`. Returns the names of the outputs.
    fn body(&mut self, graph: &Graph, outputs: &[Tensor], args: &[String], text: &mut String) -> Result<Vec<String>> {
        let data = graph.data.borrow();
        let needed = needed_nodes(&data.nodes, outputs.iter().map(|t| t.id));
        let mut names: HashMap<ValueId, String> = HashMap::new();
        for (n, node) in data.nodes.iter().enumerate() {
            if !needed[n] {
                continue;
            }
            if let Some(p) = node.prim.as_any().downcast_ref::<Parameter>() {
                names.insert(ValueId { node: n, index: 0 }, args[p.index].clone());
                continue;
            }
            let arg_names: Vec<String> = node.inputs.iter().map(|v| names[v].clone()).collect();
            let in_types: Vec<TensorType> = node.inputs.iter().map(|v| data.nodes[v.node].outputs[v.index].clone()).collect();
            let rhs = node.prim.lower(self, &arg_names, &in_types, &node.outputs)?;
            let name = self.fresh();
            match node.outputs.len() {
                0 => {
                    let _ = writeln!(text, "    {rhs}");
                }
                1 => {
                    let _ = writeln!(text, "    {name} = {rhs}");
                    names.insert(ValueId { node: n, index: 0 }, name);
                }
                k => {
                    let _ = writeln!(text, "    {name}:{k} = {rhs}");
                    for i in 0..k {
                        names.insert(ValueId { node: n, index: i }, format!("{name}#{i}"));
                    }
                }
            }
        }
        Ok(outputs.iter().map(|t| names[&t.id].clone()).collect())
    }
}

/// Marks the nodes that `roots` depend on.
pub(crate) fn needed_nodes(nodes: &[super::tensor::Node], roots: impl Iterator<Item = ValueId>) -> Vec<bool> {
    needed_nodes_until(nodes, roots, |_| false)
}

/// Marks the nodes that `roots` depend on, not looking past the values for
/// which `known` holds (their nodes are marked only if another of their
/// outputs is needed).
pub(crate) fn needed_nodes_until(nodes: &[super::tensor::Node], roots: impl Iterator<Item = ValueId>, known: impl Fn(&ValueId) -> bool) -> Vec<bool> {
    let mut needed = vec![false; nodes.len()];
    let mut stack: Vec<ValueId> = roots.collect();
    while let Some(v) = stack.pop() {
        if needed[v.node] || known(&v) {
            continue;
        }
        needed[v.node] = true;
        stack.extend(nodes[v.node].inputs.iter().copied());
    }
    needed
}

/// The whole module: `func.func public @main` over the graph's parameters, returning `outputs`.
pub fn emit_module(graph: &Graph, outputs: &[Tensor], opts: &ModuleOptions) -> Result<String> {
    if let Some(o) = outputs.iter().find(|o| !o.graph.same(graph)) {
        return Err(GraphError::Invalid(format!(
            "output {:?} belongs to graph '{}', not '{}'",
            o.ty(),
            o.graph.name(),
            graph.name()
        )));
    }
    let params = graph.params();
    if let Some(&d) = opts.donate.iter().find(|&&d| d >= params.len()) {
        return Err(GraphError::Invalid(format!("cannot donate parameter {d}: the program has {}", params.len())));
    }
    let mut cx = LowerCx { counter: 0 };
    let arg_names: Vec<String> = (0..params.len()).map(|i| format!("%arg{i}")).collect();
    let mut body = String::new();
    let results = cx.body(graph, outputs, &arg_names, &mut body)?;

    let sig: Vec<String> = params
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let mut attrs = Vec::new();
            if opts.donate.contains(&i) {
                attrs.push("jax.buffer_donor = true".to_string());
            }
            if let Some(Some(s)) = opts.arg_shardings.get(i) {
                attrs.push(format!("mhlo.sharding = \"{s}\""));
            }
            let attrs = if attrs.is_empty() { String::new() } else { format!(" {{{}}}", attrs.join(", ")) };
            format!("{}: {}{attrs}", arg_names[i], p.ty().mlir())
        })
        .collect();
    let result_sig: Vec<String> = outputs
        .iter()
        .enumerate()
        .map(|(i, o)| match opts.result_shardings.get(i) {
            Some(Some(s)) => format!("{} {{mhlo.sharding = \"{s}\"}}", o.ty().mlir()),
            _ => o.ty().mlir(),
        })
        .collect();
    let out_types: Vec<String> = outputs.iter().map(|o| o.ty().mlir()).collect();
    let name: String = graph.name().chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect();
    let mut text = String::new();
    let _ = writeln!(
        text,
        "module @{name} attributes {{mhlo.num_replicas = {} : i32, mhlo.num_partitions = {} : i32}} {{",
        opts.num_replicas.max(1),
        opts.num_partitions.max(1)
    );
    let _ = writeln!(text, "  func.func public @main({}) -> ({}) {{", sig.join(", "), result_sig.join(", "));
    text.push_str(&body);
    if results.is_empty() {
        let _ = writeln!(text, "    return");
    } else {
        let _ = writeln!(text, "    return {} : {}", results.join(", "), out_types.join(", "));
    }
    text.push_str("  }\n}\n");
    Ok(text)
}
