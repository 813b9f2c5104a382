//! The SAP's ORB stubs (IDL), and the BPF programs (C, clang-14) with their libbpf-rs skeletons.
use std::path::PathBuf;

fn main() {
    ssi_idl::Idl::new("::ssi_orb")
        .include("proto")
        .include("../orb/proto")
        .proto("proto/sap.proto")
        .extern_path(".ssi.orb", "::ssi_orb::proto")
        .compile()
        .unwrap_or_else(|e| panic!("{e}"));

    // The gateway's dispatcher (TC) and the bind guard (cgroup): C, clang-14, libbpf-rs skeletons.
    let clang = std::env::var("SSI_BPF_CLANG").unwrap_or_else(|_| "clang-14".into());
    for name in ["dispatch", "bindguard"] {
        let src = format!("src/bpf/{name}.bpf.c");
        let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR")).join(format!("{name}.skel.rs"));
        libbpf_cargo::SkeletonBuilder::new()
            .source(&src)
            .clang(&clang)
            // asm/ headers live in the multiarch directory; v3 for atomic fetch-and-add with a result.
            .clang_args(["-I/usr/include/x86_64-linux-gnu", "-Wall", "-O2", "-mcpu=v3"])
            .build_and_generate(&out)
            .unwrap_or_else(|e| panic!("building {src} with {clang} (apt: clang-14 libelf-dev zlib1g-dev pkg-config): {e:#}"));
        println!("cargo:rerun-if-changed={src}");
    }
    println!("cargo:rerun-if-env-changed=SSI_BPF_CLANG");
}
