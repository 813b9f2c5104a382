fn main() {
    ssi_idl::Idl::new("::ssi_orb")
        .include("proto")
        .include("../../orb/proto")
        .proto("proto/sdds.proto")
        .extern_path(".ssi.orb", "::ssi_orb::proto")
        .compile()
        .unwrap_or_else(|e| panic!("{e}"));
}
