//! Protobuf messages and gRPC method descriptors, declared by hand with `prost` (no code
//! generator in the build). Package names, method paths and field numbers follow `proto/*.proto`
//! exactly; the tests at the bottom check the wire tags against those files.

use grpcio::{Marshaller, Method, MethodType};

/// `methods!("/pkg."; CONST: Kind "Service/Method", Request => Response; ...)`: method
/// descriptors, each path the prefix followed by the method's part.
macro_rules! methods {
    ($prefix:literal; $($name:ident: $ty:ident $path:literal, $req:ty => $resp:ty;)+) => {$(
        pub const $name: Method<$req, $resp> = Method {
            ty: MethodType::$ty,
            name: concat!($prefix, $path),
            req_mar: prost_marshaller(),
            resp_mar: prost_marshaller(),
        };
    )+};
}

const fn prost_marshaller<M: prost::Message + Default>() -> Marshaller<M> {
    Marshaller {
        ser: grpcio::pr_ser,
        de: grpcio::pr_de,
    }
}

/// go-plugin's own services (`package plugin`).
pub mod goplugin {
    use super::*;

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ConnInfo {
        #[prost(uint32, tag = "1")]
        pub service_id: u32,
        #[prost(string, tag = "2")]
        pub network: String,
        #[prost(string, tag = "3")]
        pub address: String,
        #[prost(message, optional, tag = "4")]
        pub knock: Option<Knock>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Knock {
        #[prost(bool, tag = "1")]
        pub knock: bool,
        #[prost(bool, tag = "2")]
        pub ack: bool,
        #[prost(string, tag = "3")]
        pub error: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Empty {}

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct StdioData {
        #[prost(int32, tag = "1")]
        pub channel: i32,
        #[prost(bytes = "vec", tag = "2")]
        pub data: Vec<u8>,
    }

    methods! { "/plugin.";
        BROKER_START_STREAM: Duplex "GRPCBroker/StartStream", ConnInfo => ConnInfo;
        CONTROLLER_SHUTDOWN: Unary "GRPCController/Shutdown", Empty => Empty;
        STDIO_STREAM: ServerStreaming "GRPCStdio/StreamStdio", Empty => StdioData;
    }
}

/// `grpc.health.v1`.
pub mod health {
    use super::*;

    pub const SERVING: i32 = 1;
    pub const SERVICE_UNKNOWN: i32 = 3;

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct HealthCheckRequest {
        #[prost(string, tag = "1")]
        pub service: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct HealthCheckResponse {
        #[prost(int32, tag = "1")]
        pub status: i32,
    }

    methods! { "/grpc.health.v1.Health/";
        CHECK: Unary "Check", HealthCheckRequest => HealthCheckResponse;
        WATCH: ServerStreaming "Watch", HealthCheckRequest => HealthCheckResponse;
    }
}

/// `spire.service.private.init.v1`.
pub mod init {
    use super::*;

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct InitRequest {
        #[prost(string, repeated, tag = "1")]
        pub host_service_names: Vec<String>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct InitResponse {
        #[prost(string, repeated, tag = "1")]
        pub plugin_service_names: Vec<String>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct DeinitRequest {}

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct DeinitResponse {}

    methods! { "/spire.service.private.init.v1.Init/";
        INIT: Unary "Init", InitRequest => InitResponse;
        DEINIT: Unary "Deinit", DeinitRequest => DeinitResponse;
    }
}

/// `spire.service.common.config.v1`.
pub mod config {
    use super::*;

    pub const SERVICE_NAME: &str = "spire.service.common.config.v1.Config";

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct CoreConfiguration {
        #[prost(string, tag = "1")]
        pub trust_domain: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ConfigureRequest {
        #[prost(message, optional, tag = "1")]
        pub core_configuration: Option<CoreConfiguration>,
        #[prost(string, tag = "2")]
        pub hcl_configuration: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ConfigureResponse {}

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ValidateRequest {
        #[prost(message, optional, tag = "1")]
        pub core_configuration: Option<CoreConfiguration>,
        #[prost(string, tag = "2")]
        pub hcl_configuration: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ValidateResponse {
        #[prost(bool, tag = "1")]
        pub valid: bool,
        #[prost(string, repeated, tag = "2")]
        pub notes: Vec<String>,
    }

    methods! { "/spire.service.common.config.v1.Config/";
        CONFIGURE: Unary "Configure", ConfigureRequest => ConfigureResponse;
        VALIDATE: Unary "Validate", ValidateRequest => ValidateResponse;
    }
}

/// `spire.plugin.server.keymanager.v1`.
pub mod keymanager {
    use super::*;

    pub const SERVICE_NAME: &str = "spire.plugin.server.keymanager.v1.KeyManager";

    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
    #[repr(i32)]
    pub enum KeyType {
        UnspecifiedKeyType = 0,
        EcP256 = 1,
        EcP384 = 2,
        Rsa2048 = 3,
        Rsa4096 = 4,
    }

    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
    #[repr(i32)]
    pub enum HashAlgorithm {
        UnspecifiedHashAlgorithm = 0,
        Sha224 = 4,
        Sha256 = 5,
        Sha384 = 6,
        Sha512 = 7,
        Sha3224 = 10,
        Sha3256 = 11,
        Sha3384 = 12,
        Sha3512 = 13,
        Sha512224 = 14,
        Sha512256 = 15,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PublicKey {
        #[prost(string, tag = "1")]
        pub id: String,
        #[prost(enumeration = "KeyType", tag = "2")]
        pub r#type: i32,
        #[prost(bytes = "vec", tag = "3")]
        pub pkix_data: Vec<u8>,
        #[prost(string, tag = "4")]
        pub fingerprint: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct GenerateKeyRequest {
        #[prost(string, tag = "1")]
        pub key_id: String,
        #[prost(enumeration = "KeyType", tag = "2")]
        pub key_type: i32,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct GenerateKeyResponse {
        #[prost(message, optional, tag = "1")]
        pub public_key: Option<PublicKey>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct GetPublicKeyRequest {
        #[prost(string, tag = "1")]
        pub key_id: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct GetPublicKeyResponse {
        #[prost(message, optional, tag = "1")]
        pub public_key: Option<PublicKey>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct GetPublicKeysRequest {}

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct GetPublicKeysResponse {
        #[prost(message, repeated, tag = "1")]
        pub public_keys: Vec<PublicKey>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PssOptions {
        #[prost(int32, tag = "1")]
        pub salt_length: i32,
        #[prost(enumeration = "HashAlgorithm", tag = "2")]
        pub hash_algorithm: i32,
    }

    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum SignerOpts {
        #[prost(enumeration = "HashAlgorithm", tag = "3")]
        HashAlgorithm(i32),
        #[prost(message, tag = "4")]
        PssOptions(PssOptions),
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct SignDataRequest {
        #[prost(string, tag = "1")]
        pub key_id: String,
        #[prost(bytes = "vec", tag = "2")]
        pub data: Vec<u8>,
        #[prost(oneof = "SignerOpts", tags = "3, 4")]
        pub signer_opts: Option<SignerOpts>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct SignDataResponse {
        #[prost(bytes = "vec", tag = "1")]
        pub signature: Vec<u8>,
        #[prost(string, tag = "2")]
        pub key_fingerprint: String,
    }

    methods! { "/spire.plugin.server.keymanager.v1.KeyManager/";
        GENERATE_KEY: Unary "GenerateKey", GenerateKeyRequest => GenerateKeyResponse;
        GET_PUBLIC_KEY: Unary "GetPublicKey", GetPublicKeyRequest => GetPublicKeyResponse;
        GET_PUBLIC_KEYS: Unary "GetPublicKeys", GetPublicKeysRequest => GetPublicKeysResponse;
        SIGN_DATA: Unary "SignData", SignDataRequest => SignDataResponse;
    }
}

/// `spire.hostservice.common.metrics.v1`: the host service the plugin sends metrics to. Only
/// the two methods the plugin calls are declared.
pub mod metrics {
    use super::*;

    pub const SERVICE_NAME: &str = "spire.hostservice.common.metrics.v1.Metrics";

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Label {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub value: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct IncrCounterRequest {
        #[prost(string, repeated, tag = "1")]
        pub key: Vec<String>,
        #[prost(float, tag = "2")]
        pub val: f32,
        #[prost(message, repeated, tag = "3")]
        pub labels: Vec<Label>,
    }

    /// Same fields as `IncrCounterRequest`.
    pub type AddSampleRequest = IncrCounterRequest;

    /// `google.protobuf.Empty`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Empty {}

    methods! { "/spire.hostservice.common.metrics.v1.Metrics/";
        INCR_COUNTER: Unary "IncrCounter", IncrCounterRequest => Empty;
        ADD_SAMPLE: Unary "AddSample", AddSampleRequest => Empty;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    /// Field numbers of every message field, read from `proto/*.proto`.
    fn proto_fields() -> std::collections::HashMap<(String, String), u32> {
        let mut out = std::collections::HashMap::new();
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/proto");
        let field = regex::Regex::new(r"^\s*(?:repeated\s+)?[\w.]+\s+(\w+)\s*=\s*(\d+);").unwrap();
        let message = regex::Regex::new(r"^\s*message\s+(\w+)").unwrap();
        for entry in std::fs::read_dir(dir).unwrap() {
            let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
            let mut stack: Vec<String> = Vec::new();
            for line in text.lines() {
                if let Some(c) = message.captures(line) {
                    stack.push(c[1].to_string());
                    if line.contains('}') {
                        stack.pop();
                    }
                    continue;
                }
                if line.trim_start().starts_with("enum") || line.trim_start().starts_with("oneof") {
                    stack.push(String::new());
                    continue;
                }
                if let Some(c) = field.captures(line) {
                    if let Some(m) = stack.iter().rev().find(|s| !s.is_empty()) {
                        out.insert((m.clone(), c[1].to_string()), c[2].parse().unwrap());
                    }
                }
                if line.trim() == "}" {
                    stack.pop();
                }
            }
        }
        out
    }

    /// The field number of the first field in an encoded message.
    fn first_tag(bytes: &[u8]) -> u32 {
        (bytes[0] >> 3) as u32
    }

    #[test]
    fn field_numbers_match_the_proto_files() {
        use keymanager::*;
        let fields = proto_fields();
        let check = |msg: &str, field: &str, encoded: Vec<u8>| {
            let want = fields
                .get(&(msg.to_string(), field.to_string()))
                .unwrap_or_else(|| panic!("{msg}.{field} missing from proto/"));
            assert_eq!(first_tag(&encoded), *want, "{msg}.{field}");
        };
        let s = || "x".to_string();
        check(
            "ConnInfo",
            "service_id",
            goplugin::ConnInfo {
                service_id: 1,
                ..Default::default()
            }
            .encode_to_vec(),
        );
        check(
            "ConnInfo",
            "network",
            goplugin::ConnInfo {
                network: s(),
                ..Default::default()
            }
            .encode_to_vec(),
        );
        check(
            "ConnInfo",
            "address",
            goplugin::ConnInfo {
                address: s(),
                ..Default::default()
            }
            .encode_to_vec(),
        );
        check(
            "ConnInfo",
            "knock",
            goplugin::ConnInfo {
                knock: Some(Default::default()),
                ..Default::default()
            }
            .encode_to_vec(),
        );
        check(
            "Knock",
            "error",
            goplugin::Knock {
                error: s(),
                ..Default::default()
            }
            .encode_to_vec(),
        );
        check(
            "StdioData",
            "data",
            goplugin::StdioData {
                data: vec![1],
                ..Default::default()
            }
            .encode_to_vec(),
        );
        for (field, encoded) in [
            (
                "key",
                metrics::IncrCounterRequest {
                    key: vec![s()],
                    ..Default::default()
                }
                .encode_to_vec(),
            ),
            (
                "val",
                metrics::IncrCounterRequest {
                    val: 1.0,
                    ..Default::default()
                }
                .encode_to_vec(),
            ),
            (
                "labels",
                metrics::IncrCounterRequest {
                    labels: vec![Default::default()],
                    ..Default::default()
                }
                .encode_to_vec(),
            ),
        ] {
            check("IncrCounterRequest", field, encoded.clone());
            // Read back and re-encoded as an AddSampleRequest: a field under another number
            // there would be dropped as unknown.
            let sample = metrics::AddSampleRequest::decode(&encoded[..]).unwrap();
            check("AddSampleRequest", field, sample.encode_to_vec());
        }
        check(
            "Label",
            "name",
            metrics::Label {
                name: s(),
                ..Default::default()
            }
            .encode_to_vec(),
        );
        check(
            "Label",
            "value",
            metrics::Label {
                value: s(),
                ..Default::default()
            }
            .encode_to_vec(),
        );
        check(
            "HealthCheckRequest",
            "service",
            health::HealthCheckRequest { service: s() }.encode_to_vec(),
        );
        check(
            "HealthCheckResponse",
            "status",
            health::HealthCheckResponse { status: 1 }.encode_to_vec(),
        );
        check(
            "InitRequest",
            "host_service_names",
            init::InitRequest {
                host_service_names: vec![s()],
            }
            .encode_to_vec(),
        );
        check(
            "InitResponse",
            "plugin_service_names",
            init::InitResponse {
                plugin_service_names: vec![s()],
            }
            .encode_to_vec(),
        );
        check(
            "ConfigureRequest",
            "core_configuration",
            config::ConfigureRequest {
                core_configuration: Some(Default::default()),
                ..Default::default()
            }
            .encode_to_vec(),
        );
        check(
            "ConfigureRequest",
            "hcl_configuration",
            config::ConfigureRequest {
                hcl_configuration: s(),
                ..Default::default()
            }
            .encode_to_vec(),
        );
        check(
            "ValidateResponse",
            "valid",
            config::ValidateResponse {
                valid: true,
                ..Default::default()
            }
            .encode_to_vec(),
        );
        check(
            "ValidateResponse",
            "notes",
            config::ValidateResponse {
                notes: vec![s()],
                ..Default::default()
            }
            .encode_to_vec(),
        );
        check(
            "CoreConfiguration",
            "trust_domain",
            config::CoreConfiguration { trust_domain: s() }.encode_to_vec(),
        );
        check(
            "PublicKey",
            "id",
            PublicKey {
                id: s(),
                ..Default::default()
            }
            .encode_to_vec(),
        );
        check(
            "PublicKey",
            "type",
            PublicKey {
                r#type: 1,
                ..Default::default()
            }
            .encode_to_vec(),
        );
        check(
            "PublicKey",
            "pkix_data",
            PublicKey {
                pkix_data: vec![1],
                ..Default::default()
            }
            .encode_to_vec(),
        );
        check(
            "PublicKey",
            "fingerprint",
            PublicKey {
                fingerprint: s(),
                ..Default::default()
            }
            .encode_to_vec(),
        );
        check(
            "GenerateKeyRequest",
            "key_id",
            GenerateKeyRequest {
                key_id: s(),
                ..Default::default()
            }
            .encode_to_vec(),
        );
        check(
            "GenerateKeyRequest",
            "key_type",
            GenerateKeyRequest {
                key_type: 1,
                ..Default::default()
            }
            .encode_to_vec(),
        );
        check(
            "GenerateKeyResponse",
            "public_key",
            GenerateKeyResponse {
                public_key: Some(Default::default()),
            }
            .encode_to_vec(),
        );
        check(
            "GetPublicKeyRequest",
            "key_id",
            GetPublicKeyRequest { key_id: s() }.encode_to_vec(),
        );
        check(
            "GetPublicKeyResponse",
            "public_key",
            GetPublicKeyResponse {
                public_key: Some(Default::default()),
            }
            .encode_to_vec(),
        );
        check(
            "GetPublicKeysResponse",
            "public_keys",
            GetPublicKeysResponse {
                public_keys: vec![Default::default()],
            }
            .encode_to_vec(),
        );
        check(
            "SignDataRequest",
            "key_id",
            SignDataRequest {
                key_id: s(),
                ..Default::default()
            }
            .encode_to_vec(),
        );
        check(
            "SignDataRequest",
            "data",
            SignDataRequest {
                data: vec![1],
                ..Default::default()
            }
            .encode_to_vec(),
        );
        check(
            "SignDataRequest",
            "hash_algorithm",
            SignDataRequest {
                signer_opts: Some(SignerOpts::HashAlgorithm(5)),
                ..Default::default()
            }
            .encode_to_vec(),
        );
        check(
            "SignDataRequest",
            "pss_options",
            SignDataRequest {
                signer_opts: Some(SignerOpts::PssOptions(Default::default())),
                ..Default::default()
            }
            .encode_to_vec(),
        );
        check(
            "PSSOptions",
            "salt_length",
            PssOptions {
                salt_length: 1,
                ..Default::default()
            }
            .encode_to_vec(),
        );
        check(
            "PSSOptions",
            "hash_algorithm",
            PssOptions {
                hash_algorithm: 5,
                ..Default::default()
            }
            .encode_to_vec(),
        );
        check(
            "SignDataResponse",
            "signature",
            SignDataResponse {
                signature: vec![1],
                ..Default::default()
            }
            .encode_to_vec(),
        );
        check(
            "SignDataResponse",
            "key_fingerprint",
            SignDataResponse {
                key_fingerprint: s(),
                ..Default::default()
            }
            .encode_to_vec(),
        );
    }

    #[test]
    fn enum_values_match_spire() {
        use keymanager::{HashAlgorithm as H, KeyType as K};
        assert_eq!(K::EcP256 as i32, 1);
        assert_eq!(K::Rsa4096 as i32, 4);
        assert_eq!(H::Sha256 as i32, 5);
        assert_eq!(H::Sha512 as i32, 7);
        assert_eq!(H::Sha512256 as i32, 15);
    }

    #[test]
    fn method_paths_and_kinds() {
        use MethodType::{Duplex, ServerStreaming, Unary};
        macro_rules! check {
            ($($m:expr, $path:literal, $ty:ident;)+) => {$(
                assert_eq!(($m.name, $m.ty as u8), ($path, $ty as u8), $path);
            )+};
        }
        check! {
            goplugin::BROKER_START_STREAM, "/plugin.GRPCBroker/StartStream", Duplex;
            goplugin::CONTROLLER_SHUTDOWN, "/plugin.GRPCController/Shutdown", Unary;
            goplugin::STDIO_STREAM, "/plugin.GRPCStdio/StreamStdio", ServerStreaming;
            health::CHECK, "/grpc.health.v1.Health/Check", Unary;
            health::WATCH, "/grpc.health.v1.Health/Watch", ServerStreaming;
            init::INIT, "/spire.service.private.init.v1.Init/Init", Unary;
            init::DEINIT, "/spire.service.private.init.v1.Init/Deinit", Unary;
            config::CONFIGURE, "/spire.service.common.config.v1.Config/Configure", Unary;
            config::VALIDATE, "/spire.service.common.config.v1.Config/Validate", Unary;
            keymanager::GENERATE_KEY, "/spire.plugin.server.keymanager.v1.KeyManager/GenerateKey", Unary;
            keymanager::GET_PUBLIC_KEY, "/spire.plugin.server.keymanager.v1.KeyManager/GetPublicKey", Unary;
            keymanager::GET_PUBLIC_KEYS, "/spire.plugin.server.keymanager.v1.KeyManager/GetPublicKeys", Unary;
            keymanager::SIGN_DATA, "/spire.plugin.server.keymanager.v1.KeyManager/SignData", Unary;
            metrics::INCR_COUNTER, "/spire.hostservice.common.metrics.v1.Metrics/IncrCounter", Unary;
            metrics::ADD_SAMPLE, "/spire.hostservice.common.metrics.v1.Metrics/AddSample", Unary;
        }
    }
}
