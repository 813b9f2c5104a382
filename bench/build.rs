// The benchmark servants' control-socket service (plain tonic over the daemon's Unix socket).
fn main() {
    ssi_idl::protoc();
    tonic_prost_build::configure()
        .bytes(".")
        .compile_protos(&["proto/bench.proto"], &["proto"])
        .unwrap_or_else(|e| panic!("bench.proto: {e}"));
}
