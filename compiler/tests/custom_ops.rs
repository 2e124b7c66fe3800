//! Custom operators: a registered kernel is used for the nodes of its operator, its node's
//! errors name the node, and the compiled model gives the numbers of an independent reference.
//!
//! The model is `examples/custom_op/model.onnx` (`MatMul -> com.example:FastRmsNorm -> Relu`,
//! written by `examples/custom_op/make_model.py` with numpy's output as `expected/y.npy`).

use ndarray::ArrayD;
use ndarray_npy::ReadNpyExt;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tessera_backends::interp::{MachineRunOptions, run_machine};
use tessera_compiler::custom::{CustomOps, TileFileKernel};
use tessera_compiler::driver::{CompileError, CompileOptions, compile_file};
use tessera_ir::graph::{CustomAttr, GraphOp, TensorType};
use tessera_ir::{DType, HostTensor, TargetSpec};

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/custom_op")
}

fn npy(path: &Path) -> ArrayD<f32> {
    ArrayD::<f32>::read_npy(std::fs::File::open(path).unwrap()).unwrap()
}

fn options(ops: CustomOps, opt_level: u8) -> CompileOptions {
    CompileOptions {
        custom_ops: ops,
        opt_level,
        ..CompileOptions::default()
    }
}

/// The error of compiling the example with `ops`.
fn compile_err(ops: CustomOps) -> String {
    compile_file(&example().join("model.onnx"), &options(ops, 2))
        .unwrap_err()
        .to_string()
}

/// Runs a compiled model's artifact on the checked emulator with `x` as its only input: the
/// values of its only output.
fn run_artifact(c: &tessera_compiler::driver::Compiled, x: HostTensor) -> Vec<f64> {
    let program = &c.artifact.program;
    let mut inputs = BTreeMap::new();
    let x_id = c.artifact.signature.inputs[0].tensor;
    inputs.insert(program.tensor(x_id).unwrap().name.clone(), x);
    for (id, data) in &c.artifact.weights {
        inputs.insert(program.tensor(*id).unwrap().name.clone(), data.clone());
    }
    let out = run_machine(
        program,
        &TargetSpec::trn2(),
        &inputs,
        &MachineRunOptions::default(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let y_id = c.artifact.signature.outputs[0].tensor;
    out[&program.tensor(y_id).unwrap().name].to_f64_vec()
}

fn tile_kernel() -> CustomOps {
    let mut ops = CustomOps::new();
    let kernel = TileFileKernel::load(&example().join("rms_norm.tile")).unwrap();
    ops.register("com.example", "FastRmsNorm", kernel);
    ops
}

/// Compiles the example with `ops`, runs it on the emulator and returns the largest error
/// against numpy's output and that output's largest magnitude.
fn run_example(ops: CustomOps, opt_level: u8) -> (f64, f64) {
    let c = compile_file(&example().join("model.onnx"), &options(ops, opt_level))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        c.optimized
            .nodes
            .iter()
            .any(|n| matches!(n.op, GraphOp::Custom(_))),
        "the custom node is gone"
    );
    let x = npy(&example().join("inputs/x.npy"));
    let want = npy(&example().join("expected/y.npy"));
    let x = HostTensor::from_f64(
        DType::F32,
        x.shape(),
        &x.iter().map(|&v| f64::from(v)).collect::<Vec<_>>(),
    );
    let got = run_artifact(&c, x);
    let scale = want.iter().fold(0.0f64, |m, &v| m.max(f64::from(v).abs()));
    let worst = got
        .iter()
        .zip(want.iter())
        .fold(0.0f64, |m, (g, &w)| m.max((g - f64::from(w)).abs()));
    (worst, scale)
}

#[test]
fn tile_file_kernel_matches_numpy_at_every_level() {
    for level in [0, 1, 2] {
        let (worst, scale) = run_example(tile_kernel(), level);
        // fp32 over 64-element rows against numpy's f64: a few ulps of the output's scale.
        assert!(worst <= 1e-5 * scale, "-O{level}: {worst} of {scale}");
    }
}

#[test]
fn without_a_registered_kernel_the_error_says_how_to_add_one() {
    let e = compile_file(&example().join("model.onnx"), &CompileOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("FastRmsNorm (node \"norm\", domain com.example)")
            && e.contains("--custom-op com.example:FastRmsNorm="),
        "{e}"
    );
}

#[test]
fn a_shape_rule_refusal_names_the_node() {
    let mut ops = CustomOps::new();
    ops.register_fn(
        "com.example",
        "FastRmsNorm",
        |_, _| Err("only for bf16".into()),
        |_| Err("unreachable".into()),
    );
    let e = compile_err(ops);
    assert!(
        e.contains("node \"norm\" (FastRmsNorm)") && e.contains("only for bf16"),
        "{e}"
    );
}

#[test]
fn the_shape_rule_sees_the_attributes() {
    let mut ops = CustomOps::new();
    ops.register_fn(
        "com.example",
        "FastRmsNorm",
        |inputs, attrs| {
            let eps = attrs.iter().find(|(k, _)| k == "epsilon").map(|(_, v)| v);
            match eps {
                Some(CustomAttr::Float(e)) if (*e - 1e-6).abs() < 1e-12 => {
                    Ok(vec![inputs[0].clone()])
                }
                other => Err(format!("epsilon is {other:?}").into()),
            }
        },
        |_| Err("no kernel in this test".into()),
    );
    let e = compile_err(ops);
    // The shape rule accepted the node; the builder's own error is reported with the node.
    assert!(
        e.contains("node `norm` (com.example::FastRmsNorm)")
            && e.contains("no kernel in this test"),
        "{e}"
    );
}

#[test]
fn a_kernel_of_the_wrong_types_is_refused() {
    let mut ops = CustomOps::new();
    ops.register_fn(
        "com.example",
        "FastRmsNorm",
        |inputs, _| Ok(vec![inputs[0].clone()]),
        // A 4x64 kernel for the 8x64 node.
        |req| {
            Ok(tessera_kernels::library::binary(
                req.target,
                tessera_ir::AluOp::Add,
                &[4, 64],
                &[64],
                DType::F32,
            )?)
        },
    );
    let e = compile_err(ops);
    assert!(
        e.contains("node `norm`")
            && e.contains("the kernel's input tensors are (f32[4, 64], f32[64])"),
        "{e}"
    );
}

#[test]
fn a_kernel_breaking_a_hardware_rule_is_refused_with_its_node() {
    let text = std::fs::read_to_string(example().join("rms_norm.tile")).unwrap();
    // The right tensors, but a buffer of 200 partitions (the chip has 128).
    let broken = text.replace("alloc %ss: sbuf f32[8, 1]", "alloc %ss: sbuf f32[200, 1]");
    assert_ne!(broken, text);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("broken.tile");
    std::fs::write(&file, broken).unwrap();
    let kernel = TileFileKernel::load(&file).unwrap();
    // A shape rule that accepts the node, so the kernel itself is what is checked.
    let mut ops = CustomOps::new();
    ops.register_fn(
        "com.example",
        "FastRmsNorm",
        |inputs, _| Ok(vec![inputs[0].clone()]),
        move |req| {
            use tessera_compiler::custom::CustomKernel;
            kernel.build(req)
        },
    );
    let e = compile_file(&example().join("model.onnx"), &options(ops, 2)).unwrap_err();
    assert!(matches!(e, CompileError::Custom(_)), "{e:?}");
    let e = e.to_string();
    assert!(
        e.contains("node `norm` (com.example::FastRmsNorm): the kernel breaks a hardware rule")
            && e.contains("%ss")
            && e.contains("200"),
        "{e}"
    );
}

#[test]
fn a_tile_kernel_for_other_shapes_says_what_it_takes() {
    let mut ops = CustomOps::new();
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(example().join("rms_norm.tile")).unwrap();
    let file = dir.path().join("k.tile");
    std::fs::write(
        &file,
        text.replace("input @gamma: f32[64]", "input @gamma: f32[32]"),
    )
    .unwrap();
    ops.register(
        "com.example",
        "FastRmsNorm",
        TileFileKernel::load(&file).unwrap(),
    );
    let e = compile_err(ops);
    assert!(
        e.contains(
            "takes (f32[8, 64], f32[32]), but the node's operands are (f32[8, 64], f32[64])"
        ),
        "{e}"
    );
}

#[test]
fn the_optimiser_costs_the_node_with_the_kernels_estimate() {
    let c = compile_file(&example().join("model.onnx"), &options(tile_kernel(), 2)).unwrap();
    let node = c
        .optimized
        .nodes
        .iter()
        .find_map(|n| match &n.op {
            GraphOp::Custom(op) => Some(op.clone()),
            _ => None,
        })
        .unwrap();
    let want = tessera_ir::cost::estimate_tile_program(
        &TileFileKernel::load(&example().join("rms_norm.tile"))
            .map(|k| {
                use tessera_compiler::custom::{CustomKernel, KernelRequest};
                let ty = TensorType {
                    dtype: DType::F32,
                    shape: vec![8, 64],
                };
                k.build(&KernelRequest {
                    target: &TargetSpec::trn2(),
                    node: "norm",
                    inputs: std::slice::from_ref(&ty),
                    outputs: std::slice::from_ref(&ty),
                    attrs: &[],
                })
                .unwrap()
            })
            .unwrap(),
        &TargetSpec::trn2(),
    )
    .total_ns;
    assert!(want > 0.0);
    assert_eq!(node.est_ns, want);
    let report = c.opt_report.unwrap();
    let planned = report.plan.iter().find(|p| p.node == "norm").unwrap();
    assert_eq!(planned.est_ns, want);
}

/// The example's `.tile` RMSNorm kernel offered as an alternative for the library's fused
/// RMSNorm, with a stated estimate.
struct RmsAlternative {
    kernel: TileFileKernel,
    est_ns: f64,
}

impl tessera_compiler::custom::CustomKernel for RmsAlternative {
    fn infer(
        &self,
        inputs: &[TensorType],
        attrs: &[(String, CustomAttr)],
    ) -> Result<Vec<TensorType>, tessera_compiler::custom::CustomError> {
        self.kernel.infer(inputs, attrs)
    }

    fn build(
        &self,
        request: &tessera_compiler::custom::KernelRequest<'_>,
    ) -> Result<tessera_ir::TileProgram, tessera_compiler::custom::CustomError> {
        self.kernel.build(request)
    }

    fn estimate_ns(
        &self,
        _kernel: &tessera_ir::TileProgram,
        _request: &tessera_compiler::custom::KernelRequest<'_>,
    ) -> f64 {
        self.est_ns
    }

    fn alternative_for(
        &self,
        op: &GraphOp,
        inputs: &[TensorType],
    ) -> Option<Vec<(String, CustomAttr)>> {
        use tessera_ir::graph::{FusedOp, NormKind};
        match op {
            GraphOp::Fused(FusedOp::Norm(n))
                if n.kind == NormKind::Rms
                    && n.scale
                    && !n.shift
                    && (n.eps - 1e-6).abs() < 1e-12 =>
            {
                self.infer(inputs, &[]).ok().map(|_| vec![])
            }
            _ => None,
        }
    }
}

/// A graph with the library's fused RMSNorm over x [8, 64] (gamma a constant).
fn rms_graph() -> tessera_ir::graph::Graph {
    use tessera_ir::graph::{FusedOp, Graph, NormKind, NormSpec};
    let mut g = Graph::new("rms");
    let ty = TensorType {
        dtype: DType::F32,
        shape: vec![8, 64],
    };
    let x = g.add_input("x", ty);
    let gamma: Vec<f64> = (0..64).map(|i| 0.5 + i as f64 / 64.0).collect();
    let gamma = g.add_constant("gamma", HostTensor::from_f64(DType::F32, &[64], &gamma));
    let spec = NormSpec {
        kind: NormKind::Rms,
        eps: 1e-6,
        scale: true,
        shift: false,
    };
    let y = g
        .add_node("rms", GraphOp::Fused(FusedOp::Norm(spec)), &[x, gamma])
        .unwrap()[0];
    g.outputs.push(y);
    g
}

#[test]
fn the_optimiser_weighs_a_registered_alternative_by_its_estimate() {
    use tessera_compiler::driver::compile_graph;
    let kernel = || TileFileKernel::load(&example().join("rms_norm.tile")).unwrap();
    let chosen = |est_ns: f64| {
        let mut ops = CustomOps::new();
        ops.register(
            "com.example",
            "FastRmsNorm",
            RmsAlternative {
                kernel: kernel(),
                est_ns,
            },
        );
        let c = compile_graph(rms_graph(), &options(ops, 2)).unwrap_or_else(|e| panic!("{e}"));
        let custom = c
            .optimized
            .nodes
            .iter()
            .any(|n| matches!(n.op, GraphOp::Custom(_)));
        (custom, c)
    };
    // Cheaper than the library's kernel: chosen, and the compiled program computes RMSNorm.
    let (custom, c) = chosen(1.0);
    assert!(custom, "{:?}", c.optimized.nodes);
    let plan = &c.opt_report.as_ref().unwrap().plan;
    assert_eq!(plan.len(), 1);
    assert_eq!(plan[0].op, "com.example::FastRmsNorm");
    let x: Vec<f64> = (0..512)
        .map(|i| ((i * 37 % 101) as f64 - 50.0) / 17.0)
        .collect();
    let xt = HostTensor::from_f64(DType::F32, &[8, 64], &x);
    let want = tessera_ir::graph::evaluate(
        &rms_graph(),
        &BTreeMap::from([("x".to_string(), xt.clone())]),
    )
    .unwrap();
    let got = run_artifact(&c, xt);
    let want = want.values().next().unwrap().to_f64_vec();
    let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    for (g, w) in got.iter().zip(&want) {
        assert!((g - w).abs() <= 1e-5 * scale, "{g} vs {w}");
    }
    // Dearer than the library's kernel: the library's fused RMSNorm stays.
    let (custom, c) = chosen(1e9);
    assert!(!custom, "{:?}", c.optimized.nodes);
}
