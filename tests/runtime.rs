//! Runtime robustness: compile cache round trips, and clear errors (not
//! crashes) for missing or bogus plugins, bad arguments and bad programs.
mod common;
use common::*;
use dalle_xla::graph::emit::LowerCx;
use dalle_xla::graph::primitive::{generic, Primitive};
use dalle_xla::graph::{Graph, Tensor, TensorType};
use dalle_xla::pjrt::{self, ffi, open_client, Client, ClientOptions, Plugin};
use dalle_xla::runtime::{Program, ProgramOptions};
use dalle_xla::{DType, HostTensor};
use std::any::Any;
use std::path::{Path, PathBuf};

/// `tanh(x @ w) + 1` on small shapes, and its inputs.
fn small_program(client: &Client) -> (Program, Vec<HostTensor>) {
    let g = Graph::new("small");
    let x = g.param("x", DType::F32, &[3, 4]);
    let w = g.param("w", DType::F32, &[4, 2]);
    let y = x.matmul(&w).unwrap().tanh().unwrap().add_scalar(1.0).unwrap();
    let prog = Program::compile(client, &g, &[&y], &ProgramOptions::default()).unwrap();
    let mut r = rng(40);
    (prog, vec![random(&mut r, DType::F32, &[3, 4], -1.0, 1.0), random(&mut r, DType::F32, &[4, 2], -1.0, 1.0)])
}

/// A fresh scratch directory for this test binary.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("dalle-runtime-test-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn serialized_executable_runs_in_a_new_client() {
    let first = client();
    let (prog, inputs) = small_program(&first);
    let refs: Vec<&HostTensor> = inputs.iter().collect();
    let want = prog.run(&refs).unwrap();
    let bytes = prog.serialize().unwrap();
    assert!(!bytes.is_empty());

    // A second client of the same plugin, as a later process would open.
    let second = Client::new(first.plugin().clone(), &ClientOptions::cpu_devices(8)).unwrap();
    let loaded = Program::deserialize(&second, &bytes, &prog).unwrap();
    let got = loaded.run(&refs).unwrap();
    assert_eq!(got, want, "deserialized executable gives bit-identical results");

    // Plain-Rust check that both computed the right thing.
    let (x, w) = (inputs[0].to_f64_vec(), inputs[1].to_f64_vec());
    let expect: Vec<f64> =
        (0..6).map(|i| ((0..4).map(|k| x[(i / 2) * 4 + k] * w[k * 2 + i % 2]).sum::<f64>()).tanh() + 1.0).collect();
    assert_close(&got[0].to_f64_vec(), &expect, 1e-5, "tanh(x w) + 1");

    let e = second.deserialize(b"not an executable").err().expect("garbage must not deserialize").to_string();
    assert!(e.contains("PJRT_Executable_DeserializeAndLoad"), "{e}");
}

#[test]
fn missing_plugin_file_is_a_clear_error() {
    let missing = Path::new("/nonexistent/dir/pjrt_plugin.so");
    let e = open_client("cpu", Some(missing), &ClientOptions::default()).err().expect("must fail").to_string();
    assert!(e.contains("/nonexistent/dir/pjrt_plugin.so") && e.contains("does not exist"), "{e}");
    let e = Plugin::load(missing).err().expect("must fail").to_string();
    assert!(e.contains("cannot load PJRT plugin") && e.contains("/nonexistent/dir/pjrt_plugin.so"), "{e}");
    let e = pjrt::find_plugin("quantum", None).err().expect("must fail").to_string();
    assert!(e.contains("unknown platform 'quantum'") && e.contains("cpu"), "{e}");
}

#[test]
fn files_that_are_not_plugins_are_refused() {
    let dir = scratch("not-plugins");
    let empty = dir.join("empty.so");
    std::fs::write(&empty, b"").unwrap();
    let text = dir.join("notes.so");
    std::fs::write(&text, "this is a text file, not a shared library\n").unwrap();
    for path in [&empty, &text] {
        let e = Plugin::load(path).err().expect("must fail").to_string();
        assert!(e.contains("cannot load PJRT plugin") && e.contains(&path.display().to_string()), "{e}");
    }
    // A real shared library that is not a PJRT plugin.
    let libm = ["/lib/x86_64-linux-gnu/libm.so.6", "/usr/lib/x86_64-linux-gnu/libm.so.6", "/lib64/libm.so.6"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.is_file());
    if let Some(libm) = libm {
        let e = Plugin::load(libm).err().expect("libm is no plugin").to_string();
        assert!(e.contains("GetPjrtApi") && e.contains("not a PJRT plugin"), "{e}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn wrong_inputs_at_execute_time_are_reported_by_argument() {
    let c = client();
    let (prog, inputs) = small_program(&c);
    // Wrong dtype of a host input.
    let bad = inputs[1].cast(DType::F64);
    let e = prog.run(&[&inputs[0], &bad]).unwrap_err().to_string();
    assert!(e.contains("argument 1 ('w')") && e.contains("f32[4, 2]") && e.contains("f64[4, 2]"), "{e}");
    // Wrong shape of a device buffer.
    let bufs = prog.upload(0, &[&inputs[0], &HostTensor::zeros(DType::F32, &[2, 4])]).unwrap();
    let e = prog.execute(&[vec![&bufs[0], &bufs[1]]]).err().expect("must fail").to_string();
    assert!(e.contains("argument 1 ('w')") && e.contains("f32[2, 4]"), "{e}");
    // Wrong argument count.
    let e = prog.run(&[&inputs[0]]).unwrap_err().to_string();
    assert!(e.contains("takes 2 arguments") && e.contains("got 1"), "{e}");
    let e = prog.execute(&[vec![&bufs[0]]]).err().expect("must fail").to_string();
    assert!(e.contains("takes 2 arguments"), "{e}");
    // Inputs for more devices than the program runs on.
    let e = prog.run_replicated(&[inputs.iter().collect(), inputs.iter().collect()]).unwrap_err().to_string();
    assert!(e.contains("runs on 1 devices") && e.contains("inputs for 2"), "{e}");
    // The program still works afterwards.
    let ok = prog.run(&inputs.iter().collect::<Vec<_>>()).unwrap();
    assert_eq!(ok[0].shape, vec![3, 2]);
}

/// A primitive whose lowering claims a result type the op cannot have.
#[derive(Debug)]
struct Mistyped;

impl Primitive for Mistyped {
    fn name(&self) -> String {
        "mistyped".into()
    }
    fn infer(&self, inputs: &[TensorType]) -> dalle_xla::graph::Result<Vec<TensorType>> {
        Ok(vec![inputs[0].with_shape(vec![5])])
    }
    fn lower(&self, _: &mut LowerCx, args: &[String], ins: &[TensorType], outs: &[TensorType]) -> dalle_xla::graph::Result<String> {
        Ok(generic("stablehlo.add", &[args[0].clone(), args[0].clone()], &[ins[0].clone(), ins[0].clone()], outs, ""))
    }
    fn vjp(&self, _: &[Tensor], _: &[Tensor], _: &[Option<Tensor>]) -> dalle_xla::graph::Result<Vec<Option<Tensor>>> {
        Ok(vec![None])
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

#[test]
fn compile_errors_show_the_offending_stablehlo_line() {
    let g = Graph::new("broken");
    let x = g.param("x", DType::F32, &[3]);
    let y = g.apply1(Mistyped, &[&x]).unwrap();
    let e = Program::compile(&client(), &g, &[&y], &ProgramOptions::default()).err().expect("must not compile").to_string();
    assert!(e.contains("PJRT_Client_Compile"), "{e}");
    assert!(e.contains("in StableHLO line:") && e.contains("\"stablehlo.add\"") && e.contains("tensor<5xf32>"), "{e}");

    let e = client().compile("this is not MLIR", &Default::default()).err().expect("must not compile").to_string();
    assert!(e.contains("PJRT_Client_Compile"), "{e}");
}

#[test]
fn ffi_struct_sizes_follow_the_c_header() {
    // Sizes as `PJRT_STRUCT_SIZE(type, last_field)` gives them on LP64 for the
    // field lists of pjrt_c_api.h (8-byte pointers and size_t, 4-byte enums and ints
    // padded to the next 8-byte field, 1-byte bools).
    let cases: &[(&str, usize, usize)] = &[
        ("PJRT_Error_Message_Args", ffi::PJRT_Error_Message_Args::STRUCT_SIZE, 40),
        ("PJRT_Error_GetCode_Args", ffi::PJRT_Error_GetCode_Args::STRUCT_SIZE, 28),
        ("PJRT_NamedValue", ffi::PJRT_NamedValue::STRUCT_SIZE, 56),
        ("PJRT_Plugin_Initialize_Args", ffi::PJRT_Plugin_Initialize_Args::STRUCT_SIZE, 16),
        ("PJRT_Client_Create_Args", ffi::PJRT_Client_Create_Args::STRUCT_SIZE, 88),
        ("PJRT_Client_AddressableDevices_Args", ffi::PJRT_Client_AddressableDevices_Args::STRUCT_SIZE, 40),
        ("PJRT_Program", ffi::PJRT_Program::STRUCT_SIZE, 48),
        ("PJRT_Client_Compile_Args", ffi::PJRT_Client_Compile_Args::STRUCT_SIZE, 56),
        ("PJRT_Client_BufferFromHostBuffer_Args", ffi::PJRT_Client_BufferFromHostBuffer_Args::STRUCT_SIZE, 120),
        ("PJRT_DeviceDescription_Id_Args", ffi::PJRT_DeviceDescription_Id_Args::STRUCT_SIZE, 28),
        ("PJRT_Executable_Serialize_Args", ffi::PJRT_Executable_Serialize_Args::STRUCT_SIZE, 56),
        ("PJRT_Executable_DeserializeAndLoad_Args", ffi::PJRT_Executable_DeserializeAndLoad_Args::STRUCT_SIZE, 72),
        ("PJRT_ExecuteOptions", ffi::PJRT_ExecuteOptions::STRUCT_SIZE, 144),
        ("PJRT_LoadedExecutable_Execute_Args", ffi::PJRT_LoadedExecutable_Execute_Args::STRUCT_SIZE, 80),
        ("PJRT_Buffer_ToHostBuffer_Args", ffi::PJRT_Buffer_ToHostBuffer_Args::STRUCT_SIZE, 56),
        ("PJRT_Buffer_ElementType_Args", ffi::PJRT_Buffer_ElementType_Args::STRUCT_SIZE, 28),
        ("PJRT_Buffer_IsDeleted_Args", ffi::PJRT_Buffer_IsDeleted_Args::STRUCT_SIZE, 25),
        ("PJRT_Executable_GetCompiledMemoryStats_Args", ffi::PJRT_Executable_GetCompiledMemoryStats_Args::STRUCT_SIZE, 120),
    ];
    for (name, ours, header) in cases {
        assert_eq!(ours, header, "{name}: STRUCT_SIZE {ours}, header layout gives {header}");
    }
    // Fields after an enum or int start on the next 8-byte boundary, as in C.
    assert_eq!(std::mem::offset_of!(ffi::PJRT_Client_BufferFromHostBuffer_Args, dims), 40);
    assert_eq!(std::mem::offset_of!(ffi::PJRT_Client_BufferFromHostBuffer_Args, device), 80);
    assert_eq!(std::mem::offset_of!(ffi::PJRT_ExecuteOptions, non_donatable_input_indices), 56);
    assert_eq!(std::mem::offset_of!(ffi::PJRT_ExecuteOptions, hlo_output_callbacks), 128);
    assert_eq!(std::mem::offset_of!(ffi::PJRT_NamedValue, value), 40);
    // PJRT_Api: struct_size, extension_start, then the 24-byte PJRT_Api_Version.
    assert_eq!(std::mem::size_of::<ffi::PJRT_Api_Version>(), 24);
    assert_eq!(ffi::API_TABLE_OFFSET, 40);
    // The installed plugin accepted every struct above in the other tests; its
    // table must also reach the last function we call.
    let plugin = client().plugin().clone();
    assert!(plugin.api_table_size() >= ffi::API_TABLE_OFFSET + 8 * (ffi::slot::BUFFER_TO_HOST_BUFFER + 1));
}

/// `xla_ext/xla-cpu/pjrt_plugin.so` if installed (`scripts/install-plugin xla-cpu`).
fn xla_cpu_plugin() -> Option<PathBuf> {
    pjrt::find_plugin("xla-cpu", None).ok()
}

#[test]
fn second_cpu_plugin_runs_a_small_program() {
    let Some(path) = xla_cpu_plugin() else {
        eprintln!("skipped: xla-cpu plugin not installed (scripts/install-plugin xla-cpu)");
        return;
    };
    let c = open_client("xla-cpu", Some(&path), &ClientOptions::default()).unwrap();
    let (prog, inputs) = small_program(&c);
    let got = prog.run(&inputs.iter().collect::<Vec<_>>()).unwrap();
    let (reference, _) = small_program(&client());
    let want = reference.run(&inputs.iter().collect::<Vec<_>>()).unwrap();
    assert_close(&got[0].to_f64_vec(), &want[0].to_f64_vec(), 1e-6, "xla-cpu vs cpu plugin");
}
