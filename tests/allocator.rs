//! The process allocator (src/lib.rs) also serves the PJRT plugin: the C
//! `malloc` that a dynamically loaded library resolves is mimalloc's, not glibc's.
#![cfg(target_os = "linux")]

use std::ffi::CStr;

fn symbol(handle: *mut libc::c_void, name: &CStr) -> *mut libc::c_void {
    unsafe { libc::dlsym(handle, name.as_ptr()) }
}

#[test]
fn c_malloc_resolves_to_the_process_allocator() {
    // Links the library, whose #[global_allocator] brings mimalloc in.
    let _ = dalle_xla::HostTensor::scalar(1.0f32);
    let glibc = unsafe { libc::dlopen(c"libc.so.6".as_ptr(), libc::RTLD_NOW | libc::RTLD_NOLOAD) };
    assert!(!glibc.is_null(), "libc.so.6 is not loaded");
    for name in [c"malloc", c"free", c"calloc", c"realloc", c"posix_memalign", c"aligned_alloc"] {
        let resolved = symbol(libc::RTLD_DEFAULT, name);
        assert!(!resolved.is_null(), "{name:?} does not resolve");
        assert_ne!(resolved, symbol(glibc, name), "{name:?} resolves to glibc's: libraries such as the PJRT plugin bypass mimalloc");
    }
}
