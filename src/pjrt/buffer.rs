//! Device buffers: host to device, device to host, metadata.

use super::client::ClientInner;
use super::error::{PjrtError, Result};
use super::ffi::{self, slot};
use crate::dtype::DType;
use std::sync::Arc;

pub(crate) fn to_pjrt_type(d: DType) -> i32 {
    use ffi::buffer_type as t;
    match d {
        DType::Bool => t::PRED,
        DType::U8 => t::U8,
        DType::U32 => t::U32,
        DType::I32 => t::S32,
        DType::I64 => t::S64,
        DType::F16 => t::F16,
        DType::BF16 => t::BF16,
        DType::F32 => t::F32,
        DType::F64 => t::F64,
    }
}

pub(crate) fn from_pjrt_type(t: i32) -> Option<DType> {
    use ffi::buffer_type as b;
    Some(match t {
        b::PRED => DType::Bool,
        b::U8 => DType::U8,
        b::U32 => DType::U32,
        b::S32 => DType::I32,
        b::S64 => DType::I64,
        b::F16 => DType::F16,
        b::BF16 => DType::BF16,
        b::F32 => DType::F32,
        b::F64 => DType::F64,
        _ => return None,
    })
}

/// An array living on one device. Dropping it frees the device memory.
pub struct Buffer {
    pub(crate) client: Arc<ClientInner>,
    pub(crate) raw: *mut ffi::PJRT_Buffer,
}

// SAFETY: PJRT buffers may be used from any thread.
unsafe impl Send for Buffer {}
unsafe impl Sync for Buffer {}

impl Buffer {
    pub fn dtype(&self) -> Result<DType> {
        let mut a = ffi::PJRT_Buffer_ElementType_Args::new();
        a.buffer = self.raw;
        unsafe { self.client.plugin.call(slot::BUFFER_ELEMENT_TYPE, "PJRT_Buffer_ElementType", &mut a)? };
        from_pjrt_type(a.kind)
            .ok_or_else(|| PjrtError::Invalid(format!("buffer has element type {} that dalle-xla does not handle", a.kind)))
    }

    pub fn dims(&self) -> Result<Vec<i64>> {
        let mut a = ffi::PJRT_Buffer_Dimensions_Args::new();
        a.buffer = self.raw;
        unsafe {
            self.client.plugin.call(slot::BUFFER_DIMENSIONS, "PJRT_Buffer_Dimensions", &mut a)?;
            Ok(if a.num_dims == 0 { vec![] } else { std::slice::from_raw_parts(a.dims, a.num_dims).to_vec() })
        }
    }

    pub fn on_device_size(&self) -> Result<usize> {
        let mut a = ffi::PJRT_Buffer_OnDeviceSizeInBytes_Args::new();
        a.buffer = self.raw;
        unsafe { self.client.plugin.call(slot::BUFFER_ON_DEVICE_SIZE, "PJRT_Buffer_OnDeviceSizeInBytes", &mut a)? };
        Ok(a.on_device_size_in_bytes)
    }

    /// Whether the buffer was donated to (consumed by) an execution or deleted.
    pub fn is_deleted(&self) -> Result<bool> {
        let mut a = ffi::PJRT_Buffer_IsDeleted_Args::new();
        a.buffer = self.raw;
        unsafe { self.client.plugin.call(slot::BUFFER_IS_DELETED, "PJRT_Buffer_IsDeleted", &mut a)? };
        Ok(a.is_deleted)
    }

    /// Id of the device holding this buffer.
    pub fn device_id(&self) -> Result<i32> {
        let mut a = ffi::PJRT_Buffer_Device_Args::new();
        a.buffer = self.raw;
        unsafe { self.client.plugin.call(slot::BUFFER_DEVICE, "PJRT_Buffer_Device", &mut a)? };
        self.client.device_id(a.device)
    }

    /// Copies the buffer into a dense row-major host byte vector (waits for it).
    pub fn to_host_bytes(&self) -> Result<Vec<u8>> {
        let n: i64 = self.dims()?.iter().product();
        let bytes = n as usize * self.dtype()?.size_in_bytes();
        let mut out = vec![0u8; bytes];
        let mut a = ffi::PJRT_Buffer_ToHostBuffer_Args::new();
        a.src = self.raw;
        a.dst = out.as_mut_ptr().cast();
        a.dst_size = bytes;
        unsafe { self.client.plugin.call(slot::BUFFER_TO_HOST_BUFFER, "PJRT_Buffer_ToHostBuffer", &mut a)? };
        self.client.await_event(a.event, "PJRT_Buffer_ToHostBuffer")?;
        Ok(out)
    }

    /// Copies the buffer to another device of the same client.
    pub fn copy_to_device(&self, device_index: usize) -> Result<Buffer> {
        let dev = self.client.device_ptr(device_index)?;
        let mut a = ffi::PJRT_Buffer_CopyToDevice_Args::new();
        a.buffer = self.raw;
        a.dst_device = dev;
        unsafe { self.client.plugin.call(slot::BUFFER_COPY_TO_DEVICE, "PJRT_Buffer_CopyToDevice", &mut a)? };
        Ok(Buffer { client: self.client.clone(), raw: a.dst_buffer })
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        let mut a = ffi::PJRT_Buffer_Destroy_Args::new();
        a.buffer = self.raw;
        if let Err(e) = unsafe { self.client.plugin.call(slot::BUFFER_DESTROY, "PJRT_Buffer_Destroy", &mut a) } {
            tracing::warn!("{e}");
        }
    }
}

impl std::fmt::Debug for Buffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Buffer({:?}, {:?})", self.dtype().ok(), self.dims().ok())
    }
}
