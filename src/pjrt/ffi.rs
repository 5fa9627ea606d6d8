//! `#[repr(C)]` declarations of the part of the PJRT C API we call.
//!
//! Layouts follow the public `xla/pjrt/c/pjrt_c_api.h`. Every args struct
//! starts with `struct_size` and `extension_start`; `struct_size` is set to
//! `offsetof(last_field) + sizeof(last_field)` exactly as the C macro
//! `PJRT_STRUCT_SIZE` does, so a plugin sees which fields we know about.
//! The plugin refuses a struct smaller than its own, so these must be at least
//! as new as the newest plugin we load; `tests/pjrt_abi.rs` asks each plugin for
//! the sizes it expects and checks ours are not smaller.
#![allow(non_camel_case_types, dead_code)]

use std::ffi::c_void;

pub enum PJRT_Error {}
pub enum PJRT_Client {}
pub enum PJRT_Device {}
pub enum PJRT_DeviceDescription {}
pub enum PJRT_Executable {}
pub enum PJRT_LoadedExecutable {}
pub enum PJRT_Buffer {}
pub enum PJRT_Event {}

pub type ErrorPtr = *mut PJRT_Error;

/// Size of a field given a projection, for `PJRT_STRUCT_SIZE`.
pub const fn field_end(offset: usize, size: usize) -> usize {
    offset + size
}

/// Declares an args struct: `struct_size`, `extension_start`, then the fields.
/// The last listed field defines `STRUCT_SIZE`, as in the C header.
macro_rules! pjrt_args {
    ($name:ident { $($field:ident : $ty:ty),+ $(,)? } last $last:ident : $last_ty:ty) => {
        #[repr(C)]
        pub struct $name {
            pub struct_size: usize,
            pub extension_start: *mut c_void,
            $(pub $field: $ty,)+
        }
        impl $name {
            pub const STRUCT_SIZE: usize =
                field_end(std::mem::offset_of!($name, $last), std::mem::size_of::<$last_ty>());
            /// A zeroed struct with `struct_size` set.
            pub fn new() -> Self {
                // SAFETY: every field is a raw pointer, integer, bool or C enum
                // for which all-zero is a valid value (null / 0 / false).
                let mut s: Self = unsafe { std::mem::zeroed() };
                s.struct_size = Self::STRUCT_SIZE;
                s
            }
        }
    };
}

// ------------------------------------------------------------------ errors
pjrt_args!(PJRT_Error_Destroy_Args { error: ErrorPtr } last error: ErrorPtr);
pjrt_args!(PJRT_Error_Message_Args { error: ErrorPtr, message: *const u8, message_size: usize }
    last message_size: usize);
pjrt_args!(PJRT_Error_GetCode_Args { error: ErrorPtr, code: i32 } last code: i32);

// ------------------------------------------------------------ named values
pub const NAMED_VALUE_STRING: i32 = 0;
pub const NAMED_VALUE_INT64: i32 = 1;
pub const NAMED_VALUE_INT64_LIST: i32 = 2;
pub const NAMED_VALUE_FLOAT: i32 = 3;
pub const NAMED_VALUE_BOOL: i32 = 4;

#[repr(C)]
pub struct PJRT_NamedValue {
    pub struct_size: usize,
    pub extension_start: *mut c_void,
    pub name: *const u8,
    pub name_size: usize,
    pub kind: i32,
    /// The C union of string / int64 / int64 list / float / bool, 8 bytes.
    pub value: u64,
    pub value_size: usize,
}
impl PJRT_NamedValue {
    pub const STRUCT_SIZE: usize = field_end(std::mem::offset_of!(PJRT_NamedValue, value_size), 8);
}

// ------------------------------------------------------------------ plugin
pjrt_args!(PJRT_Plugin_Initialize_Args { _none: [u8; 0] } last extension_start: *mut c_void);
pjrt_args!(PJRT_Plugin_Attributes_Args { attributes: *const PJRT_NamedValue, num_attributes: usize }
    last num_attributes: usize);

// ------------------------------------------------------------------ events
pjrt_args!(PJRT_Event_Destroy_Args { event: *mut PJRT_Event } last event: *mut PJRT_Event);
pjrt_args!(PJRT_Event_Await_Args { event: *mut PJRT_Event } last event: *mut PJRT_Event);

// ------------------------------------------------------------------ client
pjrt_args!(PJRT_Client_Create_Args {
    create_options: *const PJRT_NamedValue,
    num_options: usize,
    kv_get_callback: *mut c_void,
    kv_get_user_arg: *mut c_void,
    kv_put_callback: *mut c_void,
    kv_put_user_arg: *mut c_void,
    client: *mut PJRT_Client,
    kv_try_get_callback: *mut c_void,
    kv_try_get_user_arg: *mut c_void,
} last kv_try_get_user_arg: *mut c_void);
pjrt_args!(PJRT_Client_Destroy_Args { client: *mut PJRT_Client } last client: *mut PJRT_Client);
pjrt_args!(PJRT_Client_PlatformName_Args {
    client: *mut PJRT_Client, platform_name: *const u8, platform_name_size: usize,
} last platform_name_size: usize);
pjrt_args!(PJRT_Client_PlatformVersion_Args {
    client: *mut PJRT_Client, platform_version: *const u8, platform_version_size: usize,
} last platform_version_size: usize);
pjrt_args!(PJRT_Client_AddressableDevices_Args {
    client: *mut PJRT_Client, addressable_devices: *const *mut PJRT_Device, num_addressable_devices: usize,
} last num_addressable_devices: usize);

#[repr(C)]
pub struct PJRT_Program {
    pub struct_size: usize,
    pub extension_start: *mut c_void,
    pub code: *const u8,
    pub code_size: usize,
    pub format: *const u8,
    pub format_size: usize,
}
impl PJRT_Program {
    pub const STRUCT_SIZE: usize = field_end(std::mem::offset_of!(PJRT_Program, format_size), 8);
}

pjrt_args!(PJRT_Client_Compile_Args {
    client: *mut PJRT_Client,
    program: *const PJRT_Program,
    compile_options: *const u8,
    compile_options_size: usize,
    executable: *mut PJRT_LoadedExecutable,
} last executable: *mut PJRT_LoadedExecutable);

pub const HOST_BUFFER_IMMUTABLE_ONLY_DURING_CALL: i32 = 0;

pjrt_args!(PJRT_Client_BufferFromHostBuffer_Args {
    client: *mut PJRT_Client,
    data: *const c_void,
    kind: i32,
    dims: *const i64,
    num_dims: usize,
    byte_strides: *const i64,
    num_byte_strides: usize,
    host_buffer_semantics: i32,
    device: *mut PJRT_Device,
    memory: *mut c_void,
    device_layout: *mut c_void,
    done_with_host_buffer: *mut PJRT_Event,
    buffer: *mut PJRT_Buffer,
} last buffer: *mut PJRT_Buffer);

// ------------------------------------------------------------------ device
pjrt_args!(PJRT_Device_GetDescription_Args {
    device: *mut PJRT_Device, device_description: *mut PJRT_DeviceDescription,
} last device_description: *mut PJRT_DeviceDescription);
pjrt_args!(PJRT_DeviceDescription_Id_Args {
    device_description: *mut PJRT_DeviceDescription, id: i32,
} last id: i32);
pjrt_args!(PJRT_DeviceDescription_Kind_Args {
    device_description: *mut PJRT_DeviceDescription, device_kind: *const u8, device_kind_size: usize,
} last device_kind_size: usize);

// -------------------------------------------------------------- executable
pjrt_args!(PJRT_Executable_Destroy_Args { executable: *mut PJRT_Executable } last executable: *mut PJRT_Executable);
pjrt_args!(PJRT_LoadedExecutable_Destroy_Args {
    executable: *mut PJRT_LoadedExecutable,
} last executable: *mut PJRT_LoadedExecutable);
pjrt_args!(PJRT_LoadedExecutable_GetExecutable_Args {
    loaded_executable: *mut PJRT_LoadedExecutable, executable: *mut PJRT_Executable,
} last executable: *mut PJRT_Executable);
pjrt_args!(PJRT_Executable_NumOutputs_Args {
    executable: *mut PJRT_Executable, num_outputs: usize,
} last num_outputs: usize);
pjrt_args!(PJRT_Executable_Serialize_Args {
    executable: *mut PJRT_Executable,
    serialized_bytes: *const u8,
    serialized_bytes_size: usize,
    serialized_executable: *mut c_void,
    serialized_executable_deleter: Option<unsafe extern "C" fn(*mut c_void)>,
} last serialized_executable_deleter: Option<unsafe extern "C" fn(*mut c_void)>);
pjrt_args!(PJRT_Executable_DeserializeAndLoad_Args {
    client: *mut PJRT_Client,
    serialized_executable: *const u8,
    serialized_executable_size: usize,
    loaded_executable: *mut PJRT_LoadedExecutable,
    overridden_serialized_compile_options: *const u8,
    overridden_serialized_compile_options_size: usize,
    load_options: *mut c_void,
} last load_options: *mut c_void);
pjrt_args!(PJRT_LoadedExecutable_AddressableDevices_Args {
    executable: *mut PJRT_LoadedExecutable,
    addressable_devices: *const *mut PJRT_Device,
    num_addressable_devices: usize,
} last num_addressable_devices: usize);
pjrt_args!(PJRT_Executable_SizeOfGeneratedCodeInBytes_Args {
    executable: *mut PJRT_Executable, size_in_bytes: i64,
} last size_in_bytes: i64);
// Mirrors `xla::CompiledMemoryStats`; newer headers end at `total_size_in_bytes`
// (older plugins accept the larger struct and leave the last two fields zero).
pjrt_args!(PJRT_Executable_GetCompiledMemoryStats_Args {
    executable: *mut PJRT_Executable,
    generated_code_size_in_bytes: i64,
    argument_size_in_bytes: i64,
    output_size_in_bytes: i64,
    alias_size_in_bytes: i64,
    temp_size_in_bytes: i64,
    host_generated_code_size_in_bytes: i64,
    host_argument_size_in_bytes: i64,
    host_output_size_in_bytes: i64,
    host_alias_size_in_bytes: i64,
    host_temp_size_in_bytes: i64,
    peak_memory_in_bytes: i64,
    total_size_in_bytes: i64,
} last total_size_in_bytes: i64);

pjrt_args!(PJRT_ExecuteOptions {
    send_callbacks: *mut c_void,
    recv_callbacks: *mut c_void,
    num_send_ops: usize,
    num_recv_ops: usize,
    launch_id: i32,
    non_donatable_input_indices: *const i64,
    num_non_donatable_input_indices: usize,
    context: *mut c_void,
    call_location: *const u8,
    num_tasks: usize,
    task_ids: *mut c_void,
    incarnation_ids: *mut c_void,
    multi_slice_config: *mut c_void,
    use_major_to_minor_data_layout_for_callbacks: bool,
    hlo_output_callbacks: *mut c_void,
    num_hlo_output_callbacks: usize,
} last num_hlo_output_callbacks: usize);

pjrt_args!(PJRT_LoadedExecutable_Execute_Args {
    executable: *mut PJRT_LoadedExecutable,
    options: *const PJRT_ExecuteOptions,
    argument_lists: *const *const *mut PJRT_Buffer,
    num_devices: usize,
    num_args: usize,
    output_lists: *const *mut *mut PJRT_Buffer,
    device_complete_events: *mut *mut PJRT_Event,
    execute_device: *mut PJRT_Device,
} last execute_device: *mut PJRT_Device);

// ------------------------------------------------------------------ buffer
pjrt_args!(PJRT_Buffer_Destroy_Args { buffer: *mut PJRT_Buffer } last buffer: *mut PJRT_Buffer);
pjrt_args!(PJRT_Buffer_ElementType_Args { buffer: *mut PJRT_Buffer, kind: i32 } last kind: i32);
pjrt_args!(PJRT_Buffer_Dimensions_Args {
    buffer: *mut PJRT_Buffer, dims: *const i64, num_dims: usize,
} last num_dims: usize);
pjrt_args!(PJRT_Buffer_ToHostBuffer_Args {
    src: *mut PJRT_Buffer,
    host_layout: *mut c_void,
    dst: *mut c_void,
    dst_size: usize,
    event: *mut PJRT_Event,
} last event: *mut PJRT_Event);
pjrt_args!(PJRT_Buffer_OnDeviceSizeInBytes_Args {
    buffer: *mut PJRT_Buffer, on_device_size_in_bytes: usize,
} last on_device_size_in_bytes: usize);
pjrt_args!(PJRT_Buffer_Device_Args { buffer: *mut PJRT_Buffer, device: *mut PJRT_Device } last device: *mut PJRT_Device);
pjrt_args!(PJRT_Buffer_CopyToDevice_Args {
    buffer: *mut PJRT_Buffer, dst_device: *mut PJRT_Device, dst_buffer: *mut PJRT_Buffer,
} last dst_buffer: *mut PJRT_Buffer);
pjrt_args!(PJRT_Buffer_IsDeleted_Args { buffer: *mut PJRT_Buffer, is_deleted: bool } last is_deleted: bool);

// --------------------------------------------------------------- the table
#[repr(C)]
pub struct PJRT_Api_Version {
    pub struct_size: usize,
    pub extension_start: *mut c_void,
    pub major_version: i32,
    pub minor_version: i32,
}

/// Offset of the first function pointer in `PJRT_Api`.
pub const API_TABLE_OFFSET: usize = 40;

#[repr(C)]
pub struct PJRT_Api {
    pub struct_size: usize,
    pub extension_start: *mut c_void,
    pub pjrt_api_version: PJRT_Api_Version,
    // function pointers follow; read through `slot`.
}

/// Position of each function we call in the `PJRT_Api` table
/// (declaration order in the header, stable across minor versions).
pub mod slot {
    pub const ERROR_DESTROY: usize = 0;
    pub const ERROR_MESSAGE: usize = 1;
    pub const ERROR_GET_CODE: usize = 2;
    pub const PLUGIN_INITIALIZE: usize = 3;
    pub const PLUGIN_ATTRIBUTES: usize = 4;
    pub const EVENT_DESTROY: usize = 5;
    pub const EVENT_AWAIT: usize = 8;
    pub const CLIENT_CREATE: usize = 10;
    pub const CLIENT_DESTROY: usize = 11;
    pub const CLIENT_PLATFORM_NAME: usize = 12;
    pub const CLIENT_PLATFORM_VERSION: usize = 14;
    pub const CLIENT_ADDRESSABLE_DEVICES: usize = 16;
    pub const CLIENT_COMPILE: usize = 20;
    pub const CLIENT_BUFFER_FROM_HOST_BUFFER: usize = 22;
    pub const DEVICE_DESCRIPTION_ID: usize = 23;
    pub const DEVICE_DESCRIPTION_KIND: usize = 26;
    pub const DEVICE_GET_DESCRIPTION: usize = 29;
    pub const EXECUTABLE_DESTROY: usize = 40;
    pub const EXECUTABLE_NUM_OUTPUTS: usize = 44;
    pub const EXECUTABLE_SIZE_OF_GENERATED_CODE: usize = 45;
    pub const EXECUTABLE_SERIALIZE: usize = 49;
    pub const LOADED_EXECUTABLE_DESTROY: usize = 50;
    pub const LOADED_EXECUTABLE_GET_EXECUTABLE: usize = 51;
    pub const LOADED_EXECUTABLE_ADDRESSABLE_DEVICES: usize = 52;
    pub const LOADED_EXECUTABLE_EXECUTE: usize = 55;
    pub const EXECUTABLE_DESERIALIZE_AND_LOAD: usize = 56;
    pub const BUFFER_DESTROY: usize = 58;
    pub const BUFFER_ELEMENT_TYPE: usize = 59;
    pub const BUFFER_DIMENSIONS: usize = 60;
    pub const BUFFER_ON_DEVICE_SIZE: usize = 64;
    pub const BUFFER_DEVICE: usize = 65;
    pub const BUFFER_IS_DELETED: usize = 68;
    pub const BUFFER_COPY_TO_DEVICE: usize = 69;
    pub const BUFFER_TO_HOST_BUFFER: usize = 70;
    /// Appended after the 0.x layout froze (slot 96; `PJRT_Executable_Fingerprint` is 94):
    /// present only when the plugin's table is long enough.
    pub const EXECUTABLE_GET_COMPILED_MEMORY_STATS: usize = 96;
    /// Number of slots at API 0.114..0.116 (1144-byte table).
    pub const COUNT_AT_0_114: usize = 138;
}

/// `PJRT_Buffer_Type` values.
pub mod buffer_type {
    pub const PRED: i32 = 1;
    pub const S8: i32 = 2;
    pub const S16: i32 = 3;
    pub const S32: i32 = 4;
    pub const S64: i32 = 5;
    pub const U8: i32 = 6;
    pub const U16: i32 = 7;
    pub const U32: i32 = 8;
    pub const U64: i32 = 9;
    pub const F16: i32 = 10;
    pub const F32: i32 = 11;
    pub const F64: i32 = 12;
    pub const BF16: i32 = 13;
}
