//! The persistent compilation cache: a program compiled once is loaded, not
//! compiled, by a new client using the same directory; anything that changes
//! the compiled code misses; damaged entries and unwritable directories never
//! fail a compile; the size limit deletes the least recently used entries.
use dalle_xla::graph::{Graph, Tensor};
use dalle_xla::pjrt::{open_client, Client, ClientOptions};
use dalle_xla::pjrt::CompileOptions;
use dalle_xla::runtime::{CompileCache, CompileEnvironment, Program, ProgramOptions};
use dalle_xla::{DType, HostTensor};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

fn scratch(name: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("compile-cache-{name}-{}-{}", std::process::id(), N.fetch_add(1, Ordering::SeqCst)));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// A fresh PJRT client (not shared with other tests) on 2 CPU devices, caching in `dir`.
fn client_with(cache: CompileCache) -> Client {
    open_client("cpu", None, &ClientOptions::cpu_devices(2))
        .expect("open the PJRT client (run scripts/install-plugin first)")
        .with_compile_cache(Some(Arc::new(cache)))
}

/// `tanh(x @ w) * scale`: a different `scale` is a different program.
fn graph(scale: f64) -> (Graph, Tensor) {
    let g = Graph::new("cached");
    let x = g.param("x", DType::F32, &[3, 4]);
    let w = g.param("w", DType::F32, &[4, 2]);
    let y = x.matmul(&w).unwrap().tanh().unwrap().scale(scale).unwrap();
    (g, y)
}

fn compile(client: &Client, scale: f64, replicas: usize) -> Program {
    let (g, y) = graph(scale);
    Program::compile(client, &g, &[&y], &ProgramOptions::replicated(replicas)).unwrap()
}

fn inputs() -> Vec<HostTensor> {
    let x: Vec<f32> = (0..12).map(|i| (i as f32 * 0.37).sin()).collect();
    let w: Vec<f32> = (0..8).map(|i| (i as f32 * 0.91).cos()).collect();
    vec![HostTensor::new(&[3, 4], &x).unwrap(), HostTensor::new(&[4, 2], &w).unwrap()]
}

/// Output bytes of a single-device program.
fn run(p: &Program) -> Vec<u8> {
    let inputs = inputs();
    let refs: Vec<&HostTensor> = inputs.iter().collect();
    p.run(&refs).unwrap().remove(0).data
}

fn entries(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|r| r.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|e| e == "pjrt")).collect())
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn a_second_compile_in_a_new_client_loads_the_cached_executable() {
    let dir = scratch("hit");
    let first = compile(&client_with(CompileCache::new(&dir)), 1.5, 1);
    assert!(!first.from_cache, "nothing was cached yet");
    assert_eq!(entries(&dir).len(), 1, "one entry written");
    let want = run(&first);

    let second = compile(&client_with(CompileCache::new(&dir)), 1.5, 1);
    assert!(second.from_cache, "the same graph in a new client must load from the cache");
    assert_eq!(run(&second), want, "a cached executable gives bit-identical results");
    assert_eq!(second.compile_note().split(" in ").next(), Some("loaded from the compile cache"));

    // Replicated programs keep their device assignment through the cache.
    let dp = compile(&client_with(CompileCache::new(&dir)), 1.5, 2);
    assert!(!dp.from_cache);
    let dp2 = compile(&client_with(CompileCache::new(&dir)), 1.5, 2);
    assert!(dp2.from_cache);
    assert_eq!(dp2.exe.device_indices(), &[0, 1]);
    let inputs = inputs();
    let per_device: Vec<Vec<&HostTensor>> = (0..2).map(|_| inputs.iter().collect()).collect();
    let outs = dp2.run_replicated(&per_device).unwrap();
    assert_eq!(outs[0][0].data, want);
    assert_eq!(outs[1][0].data, want);
}

#[test]
fn a_different_graph_or_replica_count_misses() {
    let dir = scratch("miss");
    let client = client_with(CompileCache::new(&dir));
    assert!(!compile(&client, 1.0, 1).from_cache);
    assert!(!compile(&client, 2.0, 1).from_cache, "a different graph is a different program");
    assert!(!compile(&client, 1.0, 2).from_cache, "a different replica count is a different program");
    let (g, y) = graph(1.0);
    let on_second = Program::compile(&client, &g, &[&y], &ProgramOptions::default().on_devices(vec![1])).unwrap();
    assert!(!on_second.from_cache, "a different device assignment is a different program");
    assert_eq!(entries(&dir).len(), 4);
    assert!(compile(&client, 2.0, 1).from_cache);
    let again = Program::compile(&client, &g, &[&y], &ProgramOptions::default().on_devices(vec![1])).unwrap();
    assert!(again.from_cache);
    assert_eq!(again.exe.device_indices(), &[1]);
    // A client without a cache never reads one.
    let plain = open_client("cpu", None, &ClientOptions::cpu_devices(2)).unwrap();
    assert!(!compile(&plain, 1.0, 1).from_cache);
}

#[test]
fn xla_flags_and_the_host_cpu_are_part_of_the_key() {
    // Both change the code the CPU plugin emits: an entry compiled under
    // other flags, or on a CPU with other instructions, must not be loaded.
    let client = client_with(CompileCache::new(scratch("environment")));
    let options = CompileOptions::single();
    let here = CompileEnvironment::current();
    assert_eq!(CompileCache::key(&client, "module", &options), CompileCache::key_in(&client, "module", &options, here));
    assert!(here.host_cpu.starts_with(std::env::consts::ARCH), "{}", here.host_cpu);
    let key = |environment: &CompileEnvironment| CompileCache::key_in(&client, "module", &options, environment);
    let flagged = CompileEnvironment { xla_flags: "--xla_cpu_max_isa=AVX2".into(), ..here.clone() };
    let other_cpu = CompileEnvironment { host_cpu: format!("{}|flags: sse2", std::env::consts::ARCH), ..here.clone() };
    assert_ne!(key(&flagged), key(here));
    assert_ne!(key(&other_cpu), key(here));
    assert_ne!(key(&flagged), key(&other_cpu));
    assert_eq!(key(&flagged.clone()), key(&flagged), "the same environment gives the same key");
}

#[test]
fn damaged_entries_are_recompiled_and_rewritten() {
    let dir = scratch("corrupt");
    let good = compile(&client_with(CompileCache::new(&dir)), 0.5, 1);
    let want = run(&good);
    let [entry] = entries(&dir).try_into().expect("one entry");
    let original = std::fs::read(&entry).unwrap();
    let mut flipped = original.clone();
    *flipped.last_mut().unwrap() ^= 0x5a;
    let mut bad_payload = original[..original.len() / 2].to_vec();
    bad_payload.resize(original.len(), 0xff);
    let damages: Vec<(&str, Vec<u8>)> = vec![
        ("truncated", original[..original.len() / 2].to_vec()),
        ("empty", vec![]),
        ("garbage", b"this is not an executable at all".repeat(100)),
        ("flipped byte", flipped),
        ("overwritten tail", bad_payload),
    ];
    for (what, bytes) in damages {
        std::fs::write(&entry, &bytes).unwrap();
        let p = compile(&client_with(CompileCache::new(&dir)), 0.5, 1);
        assert!(!p.from_cache, "{what}: a damaged entry must not be used");
        assert_eq!(run(&p), want, "{what}: recompiled program runs");
        assert_eq!(std::fs::read(&entry).unwrap().len(), original.len(), "{what}: a good entry was written again");
        assert!(compile(&client_with(CompileCache::new(&dir)), 0.5, 1).from_cache, "{what}: the rewritten entry loads");
    }
}

#[test]
fn an_unwritable_cache_directory_does_not_fail_the_compile() {
    let base = scratch("unwritable");
    std::fs::create_dir_all(&base).unwrap();
    // A regular file where the directory should be, and a directory below a file:
    // neither can be created or written, even by root.
    let file = base.join("a-file");
    std::fs::write(&file, b"not a directory").unwrap();
    for dir in [file.clone(), file.join("below")] {
        let client = client_with(CompileCache::new(&dir));
        let p = compile(&client, 3.0, 1);
        assert!(!p.from_cache);
        assert_eq!(run(&p).len(), 3 * 2 * 4);
        let again = compile(&client, 3.0, 1);
        assert!(!again.from_cache, "nothing could be cached");
    }
    assert_eq!(std::fs::read(&file).unwrap(), b"not a directory", "the file in the way is untouched");
}

fn set_age(path: &Path, seconds_ago: u64) {
    let f = std::fs::File::options().write(true).open(path).unwrap();
    f.set_modified(SystemTime::now() - Duration::from_secs(seconds_ago)).unwrap();
}

fn size(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().len()
}

#[test]
fn the_size_limit_deletes_the_least_recently_used_entries() {
    let dir = scratch("lru");
    let client = client_with(CompileCache::new(&dir));
    let mut made = Vec::new();
    for scale in [1.0, 2.0, 3.0] {
        let before = entries(&dir);
        compile(&client, scale, 1);
        let after = entries(&dir);
        made.push(after.into_iter().find(|e| !before.contains(e)).expect("a new entry"));
    }
    let [a, b, c] = made.clone().try_into().unwrap();
    set_age(&a, 300);
    set_age(&b, 200);
    set_age(&c, 100);
    // A hit makes `a` the most recently used.
    assert!(compile(&client_with(CompileCache::new(&dir)), 1.0, 1).from_cache);
    // Room for two of the three: the oldest, now `b`, goes.
    let limit = size(&a) + size(&c);
    CompileCache::new(&dir).with_max_bytes(limit).enforce_limit();
    assert_eq!(entries(&dir), { let mut v = vec![a.clone(), c.clone()]; v.sort(); v }, "b was the least recently used");

    // Writing past the limit deletes older entries but keeps the new one.
    let tight = client_with(CompileCache::new(&dir).with_max_bytes(1));
    let p = compile(&tight, 4.0, 1);
    assert!(!p.from_cache);
    let left = entries(&dir);
    assert_eq!(left.len(), 1, "only the newest entry is kept: {left:?}");
    assert!(!left.contains(&a) && !left.contains(&c));
    assert!(compile(&tight, 4.0, 1).from_cache);
}

#[test]
fn a_remote_tier_carries_programs_to_a_machine_with_an_empty_cache() {
    // The run directory's compile-cache folder, here on disk; a second machine
    // has its own, empty local cache.
    let remote_dir = scratch("remote");
    let remote = || dalle_xla::storage::open(remote_dir.to_str().unwrap()).unwrap();
    let (first_local, second_local) = (scratch("first-machine"), scratch("second-machine"));
    let first = compile(&client_with(CompileCache::new(&first_local).with_remote(remote())), 2.5, 1);
    assert!(!first.from_cache);
    assert_eq!(entries(&remote_dir).len(), 1, "the compiled program is copied to the remote tier");

    let second = compile(&client_with(CompileCache::new(&second_local).with_remote(remote())), 2.5, 1);
    assert!(second.from_cache, "loaded from the remote tier instead of compiled");
    assert_eq!(run(&second), run(&first), "bit-identical results");
    assert_eq!(entries(&second_local).len(), 1, "the fetched entry is kept locally");

    // A damaged remote entry is compiled around and replaced.
    let entry = entries(&remote_dir).remove(0);
    std::fs::write(&entry, b"DXLAPJRT garbage").unwrap();
    let third = compile(&client_with(CompileCache::new(scratch("third-machine")).with_remote(remote())), 2.5, 1);
    assert!(!third.from_cache, "a damaged remote entry is not used");
    assert_eq!(run(&third), run(&first));
    let fourth = compile(&client_with(CompileCache::new(scratch("fourth-machine")).with_remote(remote())), 2.5, 1);
    assert!(fourth.from_cache, "the compile rewrote a good remote entry");

    // An unreachable remote tier never fails a compile.
    let blocked = scratch("blocked");
    let location = dalle_xla::storage::open(blocked.to_str().unwrap()).unwrap();
    let _ = std::fs::remove_dir_all(&blocked);
    std::fs::write(&blocked, b"a file where the folder should be").unwrap();
    let cache = CompileCache::new(scratch("fifth-machine")).with_remote(location);
    let fifth = compile(&client_with(cache), 3.5, 1);
    assert!(!fifth.from_cache);
}
