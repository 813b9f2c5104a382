// The CLI <-> daemon control interface (plain tonic over a Unix socket).
fn main() {
    ssi_idl::protoc();
    tonic_prost_build::configure()
        .bytes(".")
        .compile_protos(&["src/proto/control.proto"], &["src/proto"])
        .unwrap_or_else(|e| panic!("control.proto: {e}"));
}
