//! `xla.CompileOptionsProto`, encoded with prost derive structs (no protoc).
//! Field numbers follow `xla/pjrt/proto/compile_options.proto` and `xla/xla_data.proto`.

use prost::Message;

#[derive(Clone, PartialEq, Message)]
pub struct CompileOptionsProto {
    #[prost(message, optional, tag = "3")]
    pub executable_build_options: Option<ExecutableBuildOptionsProto>,
    #[prost(bool, tag = "4")]
    pub compile_portable_executable: bool,
}

#[derive(Clone, PartialEq, Message)]
pub struct ExecutableBuildOptionsProto {
    #[prost(int64, tag = "1")]
    pub device_ordinal: i64,
    #[prost(int64, tag = "4")]
    pub num_replicas: i64,
    #[prost(int64, tag = "5")]
    pub num_partitions: i64,
    #[prost(bool, tag = "6")]
    pub use_spmd_partitioning: bool,
    #[prost(message, optional, tag = "9")]
    pub device_assignment: Option<DeviceAssignmentProto>,
    #[prost(bool, repeated, tag = "12")]
    pub allow_spmd_sharding_propagation_to_output: Vec<bool>,
    #[prost(bool, repeated, tag = "18")]
    pub allow_spmd_sharding_propagation_to_parameters: Vec<bool>,
}

#[derive(Clone, PartialEq, Message)]
pub struct DeviceAssignmentProto {
    #[prost(int32, tag = "1")]
    pub replica_count: i32,
    #[prost(int32, tag = "2")]
    pub computation_count: i32,
    #[prost(message, repeated, tag = "3")]
    pub computation_devices: Vec<ComputationDevice>,
}

#[derive(Clone, PartialEq, Message)]
pub struct ComputationDevice {
    #[prost(int64, repeated, tag = "1")]
    pub replica_device_ids: Vec<i64>,
}

/// How a program is spread over devices.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct CompileOptions {
    /// Data-parallel replicas (one program copy per device, cross-replica collectives).
    pub num_replicas: usize,
    /// SPMD partitions (one program split by sharding annotations).
    pub num_partitions: usize,
    /// Device ids, `[replica][partition]`; default: the first devices in order.
    pub device_ids: Option<Vec<Vec<i64>>>,
    /// Per output of an SPMD program, whether XLA may choose its sharding
    /// (JAX's rule: only where the program does not annotate one; an
    /// annotated output keeps its annotation, so a step's outputs fit its
    /// next call's arguments). Empty: every output may be chosen.
    pub propagate_to_output: Vec<bool>,
}

impl CompileOptions {
    pub fn single() -> Self {
        CompileOptions { num_replicas: 1, num_partitions: 1, device_ids: None, propagate_to_output: vec![] }
    }
    pub fn replicated(n: usize) -> Self {
        CompileOptions { num_replicas: n, num_partitions: 1, device_ids: None, propagate_to_output: vec![] }
    }
    pub fn spmd(n: usize) -> Self {
        CompileOptions { num_replicas: 1, num_partitions: n, device_ids: None, propagate_to_output: vec![] }
    }

    pub fn num_devices(&self) -> usize {
        self.num_replicas.max(1) * self.num_partitions.max(1)
    }

    pub fn to_proto(&self, default_ids: &[i64]) -> CompileOptionsProto {
        let replicas = self.num_replicas.max(1);
        let partitions = self.num_partitions.max(1);
        let ids: Vec<Vec<i64>> = match &self.device_ids {
            Some(ids) => ids.clone(),
            None => (0..replicas)
                .map(|r| (0..partitions).map(|p| default_ids[r * partitions + p]).collect())
                .collect(),
        };
        // The proto stores devices per computation (partition), listing replicas.
        let computation_devices = (0..partitions)
            .map(|p| ComputationDevice { replica_device_ids: (0..replicas).map(|r| ids[r][p]).collect() })
            .collect();
        CompileOptionsProto {
            executable_build_options: Some(ExecutableBuildOptionsProto {
                device_ordinal: -1,
                num_replicas: replicas as i64,
                num_partitions: partitions as i64,
                use_spmd_partitioning: partitions > 1,
                device_assignment: Some(DeviceAssignmentProto {
                    replica_count: replicas as i32,
                    computation_count: partitions as i32,
                    computation_devices,
                }),
                allow_spmd_sharding_propagation_to_output: if partitions > 1 && !self.propagate_to_output.is_empty() {
                    self.propagate_to_output.clone()
                } else {
                    vec![partitions > 1]
                },
                allow_spmd_sharding_propagation_to_parameters: vec![false],
            }),
            compile_portable_executable: false,
        }
    }

    pub fn encode(&self, default_ids: &[i64]) -> Vec<u8> {
        self.to_proto(default_ids).encode_to_vec()
    }
}
