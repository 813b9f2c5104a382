// Generates the ORB's own IDL (core types, well-known services, diag) with the ssi IDL
// compiler, and the one gRPC service the ORB rides on (a bidirectional stream of message
// batches) with tonic's manual builder and the ORB's batch codec.
fn main() {
    ssi_idl::Idl::new("crate")
        .include("proto")
        .proto("proto/orb.proto")
        .proto("proto/services.proto")
        .proto("proto/diag.proto")
        .compile()
        .unwrap_or_else(|e| panic!("{e}"));

    let connect = tonic_build::manual::Method::builder()
        .name("open")
        .route_name("Open")
        .input_type("crate::wire::Frames")
        .output_type("crate::wire::Frames")
        .codec_path("crate::wire::BatchCodec")
        .client_streaming()
        .server_streaming()
        .build();
    let transport = tonic_build::manual::Service::builder().name("Transport").package("ssi.orb").method(connect).build();
    tonic_build::manual::Builder::new().compile(&[transport]);
}
