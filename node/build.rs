// The CLI <-> daemon control interface (plain tonic over a Unix socket).
fn main() {
    ssi_idl::protoc();
    // `ssi status` carries PXFS's VolumeState as the volume servers answer it.
    tonic_prost_build::configure()
        .bytes(".")
        .extern_path(".ssi.pxfs", "::ssi_pxfs::proto")
        .extern_path(".ssi.orb", "::ssi_orb::proto")
        .compile_protos(&["proto/control.proto"], &["proto", "../pxfs/proto", "../orb/proto"])
        .unwrap_or_else(|e| panic!("control.proto: {e}"));
}
