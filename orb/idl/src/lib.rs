//! The ssi IDL compiler.
//!
//! Interfaces are written as `.proto` files. This crate turns them, at build time, into:
//! - the message types (through prost-build);
//! - for every `service`: a servant trait (what an object implements), a skeleton that
//!   unmarshals requests and calls the servant, and a typed stub that marshals calls into ORB
//!   invocations. This is what a CORBA IDL compiler did for Solaris MC.
//! - for every message: an implementation of `RefCarrier` that lists the object references
//!   (`ssi.orb.ObjRef` fields, also nested) the message carries, so the ORB can count
//!   references passed inside invocations without reflection at run time.
//!
//! A method whose reply type is `ssi.orb.OneWay` is a one-way invocation (CORBA's `oneway`).
//! Streaming methods are refused: ORB invocations are request/response.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use heck::{ToShoutySnakeCase, ToSnakeCase};
use prost::Message as _;
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, FileDescriptorSet};

const OBJREF: &str = ".ssi.orb.ObjRef";
const ONEWAY: &str = ".ssi.orb.OneWay";

/// FNV-1a of the fully qualified interface name: the interface id carried in headers and
/// references, so a call made through the wrong interface is refused instead of misread.
pub fn interface_id(full_name: &str) -> u32 {
    let mut h: u32 = 0x811c9dc5;
    for b in full_name.bytes() {
        h ^= b as u32;
        h = h.wrapping_mul(0x01000193);
    }
    h
}

/// The protoc to run: `$PROTOC` when set, else the one vendored in `protoc-bin-vendored`, so
/// a fresh machine builds without a system package. Also exported as `PROTOC` for other
/// generators in the same build script (tonic-prost-build).
pub fn protoc() -> PathBuf {
    if let Some(p) = std::env::var_os("PROTOC") {
        return PathBuf::from(p);
    }
    let p = protoc_bin_vendored::protoc_bin_path().expect("protoc-bin-vendored has a protoc for this platform");
    std::env::set_var("PROTOC", &p);
    p
}

/// Builder for one IDL compilation.
/// Why an IDL compilation failed (a build script prints it and stops).
#[derive(Debug, thiserror::Error)]
pub enum IdlError {
    #[error("ssi-idl: OUT_DIR not set (run from a build script)")]
    NoOutDir,
    #[error("ssi-idl: cannot run protoc ({}): {source}", protoc.display())]
    Protoc { protoc: PathBuf, source: std::io::Error },
    #[error("ssi-idl: protoc failed: {0}")]
    ProtocFailed(String),
    #[error("ssi-idl: {}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("ssi-idl: protoc's descriptor set: {0}")]
    Descriptors(#[from] prost::DecodeError),
    #[error("ssi-idl: prost-build: {0}")]
    ProstBuild(std::io::Error),
    #[error("ssi-idl: {field}: object references inside {place} are not supported")]
    RefsIn { field: String, place: &'static str },
}

pub struct Idl {
    protos: Vec<PathBuf>,
    includes: Vec<PathBuf>,
    orb_path: String,
    extern_paths: Vec<(String, String)>,
}

impl Idl {
    /// `orb_path` is the Rust path of the ORB crate as seen from the generated code:
    /// `crate` inside ssi-orb itself, `::ssi_orb` everywhere else.
    pub fn new(orb_path: &str) -> Self {
        Idl { protos: vec![], includes: vec![], orb_path: orb_path.to_string(), extern_paths: vec![] }
    }
    pub fn proto(mut self, p: impl AsRef<Path>) -> Self {
        self.protos.push(p.as_ref().to_path_buf());
        self
    }
    pub fn include(mut self, p: impl AsRef<Path>) -> Self {
        self.includes.push(p.as_ref().to_path_buf());
        self
    }
    /// Types of another crate's IDL (e.g. `.ssi.orb` → `::ssi_orb::proto`).
    pub fn extern_path(mut self, proto: &str, rust: &str) -> Self {
        self.extern_paths.push((proto.to_string(), rust.to_string()));
        self
    }

    /// Runs protoc and writes `<package>.rs` files into `OUT_DIR`.
    pub fn compile(self) -> Result<(), IdlError> {
        let out_dir = PathBuf::from(std::env::var("OUT_DIR").map_err(|_| IdlError::NoOutDir)?);
        let fds_path = out_dir.join("ssi-idl-descriptors.bin");
        let protoc = protoc();
        let mut cmd = std::process::Command::new(&protoc);
        cmd.arg("--include_imports").arg(format!("--descriptor_set_out={}", fds_path.display()));
        for i in &self.includes {
            cmd.arg(format!("-I{}", i.display()));
        }
        for p in &self.protos {
            cmd.arg(p);
            println!("cargo:rerun-if-changed={}", p.display());
        }
        let out = cmd.output().map_err(|source| IdlError::Protoc { protoc: protoc.clone(), source })?;
        if !out.status.success() {
            return Err(IdlError::ProtocFailed(String::from_utf8_lossy(&out.stderr).into_owned()));
        }
        let bytes = std::fs::read(&fds_path).map_err(|source| IdlError::Io { path: fds_path.clone(), source })?;
        let fds = FileDescriptorSet::decode(bytes.as_slice())?;

        let analysis = RefAnalysis::new(&fds)?;
        let mut config = prost_build::Config::new();
        config.bytes(["."]);
        for (p, r) in &self.extern_paths {
            config.extern_path(p, r);
        }
        config.service_generator(Box::new(OrbServiceGen { orb: self.orb_path.clone() }));
        // Only the files named (not imports that belong to another crate) are generated.
        let extern_pkgs: HashSet<String> = self.extern_paths.iter().map(|(p, _)| p.trim_start_matches('.').to_string()).collect();
        let mut own = fds.clone();
        own.file.retain(|f| !extern_pkgs.iter().any(|e| f.package() == e || f.package().starts_with(&format!("{e}."))));
        config.compile_fds(own.clone()).map_err(IdlError::ProstBuild)?;

        // Append RefCarrier implementations to each generated package file.
        for file in &own.file {
            let pkg = file.package().to_string();
            let path = out_dir.join(format!("{pkg}.rs"));
            let mut code = String::new();
            for m in &file.message_type {
                analysis.emit_impls(&mut code, &self.orb_path, &format!(".{pkg}"), "", m)?;
            }
            let mut existing = std::fs::read_to_string(&path).map_err(|source| IdlError::Io { path: path.clone(), source })?;
            existing.push_str("\n// ---- ssi-idl: object references carried by each message ----\n");
            existing.push_str(&code);
            std::fs::write(&path, &existing).map_err(|source| IdlError::Io { path: path.clone(), source })?;
        }
        Ok(())
    }
}

/// Which message types carry object references, directly or through nested messages.
struct RefAnalysis {
    messages: HashMap<String, DescriptorProto>,
    carries: HashSet<String>,
}

impl RefAnalysis {
    fn new(fds: &FileDescriptorSet) -> Result<Self, IdlError> {
        let mut messages = HashMap::new();
        fn walk(prefix: &str, m: &DescriptorProto, out: &mut HashMap<String, DescriptorProto>) {
            let name = format!("{prefix}.{}", m.name());
            for n in &m.nested_type {
                walk(&name, n, out);
            }
            out.insert(name, m.clone());
        }
        for f in &fds.file {
            for m in &f.message_type {
                walk(&format!(".{}", f.package()), m, &mut messages);
            }
        }
        // Fixed point: a message carries refs if a message-typed field does.
        let mut carries: HashSet<String> = HashSet::new();
        carries.insert(OBJREF.to_string());
        loop {
            let mut changed = false;
            for (name, m) in &messages {
                if carries.contains(name) {
                    continue;
                }
                if m.field.iter().any(|f| f.r#type() == Type::Message && carries.contains(f.type_name())) {
                    carries.insert(name.clone());
                    changed = true;
                }
            }
            if !changed {
                break;
            }
        }
        Ok(RefAnalysis { messages, carries })
    }

    fn emit_impls(&self, out: &mut String, orb: &str, scope: &str, rust_mod: &str, m: &DescriptorProto) -> Result<(), IdlError> {
        let full = format!("{scope}.{}", m.name());
        let rust_ty = format!("{rust_mod}{}", m.name());
        let is_map_entry = m.options.as_ref().map(|o| o.map_entry()).unwrap_or(false);
        if !is_map_entry {
            if full == OBJREF {
                let _ = writeln!(out, "impl {orb}::RefCarrier for {rust_ty} {{\n    fn collect_refs(&self, out: &mut Vec<{orb}::proto::ObjRef>) {{ out.push(self.clone()); }}\n}}");
            } else if !self.carries.contains(&full) {
                let _ = writeln!(out, "impl {orb}::RefCarrier for {rust_ty} {{}}");
            } else {
                let mut body = String::new();
                for f in &m.field {
                    if f.r#type() != Type::Message || !self.carries.contains(f.type_name()) {
                        continue;
                    }
                    let target = &self.messages[f.type_name()];
                    if target.options.as_ref().map(|o| o.map_entry()).unwrap_or(false) {
                        return Err(IdlError::RefsIn { field: format!("{full}.{}", f.name()), place: "a map" });
                    }
                    if f.oneof_index.is_some() && !f.proto3_optional() {
                        return Err(IdlError::RefsIn { field: format!("{full}.{}", f.name()), place: "a oneof" });
                    }
                    let field = rust_field(f.name());
                    if f.label() == Label::Repeated {
                        let _ = writeln!(body, "        for v in &self.{field} {{ {orb}::RefCarrier::collect_refs(v, out); }}");
                    } else {
                        let _ = writeln!(body, "        if let Some(v) = &self.{field} {{ {orb}::RefCarrier::collect_refs(v, out); }}");
                    }
                }
                let _ = writeln!(out, "impl {orb}::RefCarrier for {rust_ty} {{\n    const CARRIES_REFS: bool = true;\n    fn collect_refs(&self, out: &mut Vec<{orb}::proto::ObjRef>) {{\n{body}    }}\n}}");
            }
        }
        let nested_mod = format!("{rust_mod}{}::", m.name().to_snake_case());
        for n in &m.nested_type {
            self.emit_impls(out, orb, &full, &nested_mod, n)?;
        }
        Ok(())
    }
}

fn rust_field(name: &str) -> String {
    let s = name.to_snake_case();
    const KW: &[&str] = &[
        "as", "break", "const", "continue", "crate", "else", "enum", "extern", "false", "fn", "for", "if", "impl", "in", "let", "loop",
        "match", "mod", "move", "mut", "pub", "ref", "return", "static", "struct", "trait", "true", "type", "unsafe", "use", "where",
        "while", "async", "await", "dyn", "abstract", "become", "box", "do", "final", "macro", "override", "priv", "typeof", "unsized",
        "virtual", "yield", "try", "gen",
    ];
    if s == "self" || s == "super" {
        format!("{s}_")
    } else if KW.contains(&s.as_str()) {
        format!("r#{s}")
    } else {
        s
    }
}

/// prost-build hook: one servant trait, skeleton and stub per IDL service.
struct OrbServiceGen {
    orb: String,
}

impl prost_build::ServiceGenerator for OrbServiceGen {
    fn generate(&mut self, service: prost_build::Service, buf: &mut String) {
        let orb = &self.orb;
        let full = format!("{}.{}", service.package, service.proto_name);
        let iface = interface_id(&full);
        let name = &service.name;
        let consts = name.to_shouty_snake_case();
        let mut s = String::new();
        let _ = writeln!(s, "/// Interface id of `{full}` (FNV-1a of its full name).");
        let _ = writeln!(s, "pub const {consts}_INTERFACE: u32 = {iface:#010x};");
        let _ = writeln!(s, "pub const {consts}_INTERFACE_NAME: &str = \"{full}\";");
        let _ = writeln!(s, "/// Method ids of `{full}`, in IDL order.");
        let _ = writeln!(s, "pub mod {}_methods {{", name.to_snake_case());
        for (i, m) in service.methods.iter().enumerate() {
            assert!(
                !m.client_streaming && !m.server_streaming,
                "ssi-idl: {full}.{}: streaming methods are not ORB invocations",
                m.proto_name
            );
            let _ = writeln!(s, "    pub const {}: u32 = {i};", m.name.to_shouty_snake_case());
        }
        let _ = writeln!(s, "}}");

        // Servant trait.
        for line in service.comments.leading.iter() {
            let _ = writeln!(s, "///{line}");
        }
        let _ = writeln!(s, "#[{orb}::async_trait]");
        let _ = writeln!(s, "pub trait {name}: Send + Sync + 'static {{");
        for m in &service.methods {
            for line in m.comments.leading.iter() {
                let _ = writeln!(s, "    ///{line}");
            }
            let _ = writeln!(
                s,
                "    async fn {}(&self, ctx: &{orb}::CallCtx, req: {}) -> ::std::result::Result<{}, {orb}::Exception>;",
                m.name, m.input_type, m.output_type
            );
        }
        let _ = writeln!(s, "    /// Called once when no node holds a reference to this object any more");
        let _ = writeln!(s, "    /// (Solaris MC's `_unreferenced`).");
        let _ = writeln!(s, "    fn on_unreferenced(&self) {{}}");
        let _ = writeln!(s, "}}");

        // Skeleton.
        let _ = writeln!(s, "/// Skeleton: unmarshals invocations of `{full}` and calls the servant.");
        let _ = writeln!(s, "pub struct {name}Skeleton<T: {name}>(pub ::std::sync::Arc<T>);");
        let _ = writeln!(s, "impl<T: {name}> {orb}::Servant for {name}Skeleton<T> {{");
        let _ = writeln!(s, "    fn interface(&self) -> u32 {{ {consts}_INTERFACE }}");
        let _ = writeln!(s, "    fn interface_name(&self) -> &'static str {{ {consts}_INTERFACE_NAME }}");
        let _ = writeln!(s, "    fn dispatch(&self, ctx: {orb}::CallCtx, method: u32, payload: {orb}::Bytes) -> {orb}::DispatchFuture {{");
        let _ = writeln!(s, "        let servant = self.0.clone();");
        let _ = writeln!(s, "        match method {{");
        for (i, m) in service.methods.iter().enumerate() {
            let _ = writeln!(
                s,
                "            {i} => Box::pin(async move {{ let req: {} = {orb}::decode_request(payload)?; let rep = <T as {name}>::{}(&servant, &ctx, req).await?; Ok({orb}::Outgoing::from_message(&rep)) }}),",
                m.input_type, m.name
            );
        }
        let _ = writeln!(s, "            _ => Box::pin(async move {{ Err({orb}::Exception::bad_method(method)) }}),");
        let _ = writeln!(s, "        }}");
        let _ = writeln!(s, "    }}");
        let _ = writeln!(s, "    fn is_oneway(&self, method: u32) -> bool {{ match method {{");
        for (i, m) in service.methods.iter().enumerate() {
            if m.output_proto_type == ONEWAY {
                let _ = writeln!(s, "        {i} => true,");
            }
        }
        let _ = writeln!(s, "        _ => false }} }}");
        let _ = writeln!(s, "    fn unreferenced(&self) {{ <T as {name}>::on_unreferenced(&self.0) }}");
        let _ = writeln!(s, "}}");
        let _ = writeln!(s, "/// Exports a `{name}` servant on `orb`; the handle is the first reference to it.");
        let _ = writeln!(s, "pub fn export_{}<T: {name}>(orb: &{orb}::Orb, servant: T) -> {orb}::ObjHandle {{", name.to_snake_case());
        let _ = writeln!(s, "    orb.export(::std::sync::Arc::new({name}Skeleton(::std::sync::Arc::new(servant))))");
        let _ = writeln!(s, "}}");

        // Stub.
        let _ = writeln!(s, "/// Typed stub: each method is one ORB invocation on the referenced object.");
        let _ = writeln!(s, "#[derive(Clone)]");
        let _ = writeln!(s, "pub struct {name}Stub {{ target: {orb}::ObjHandle, opts: {orb}::CallOptions }}");
        let _ = writeln!(s, "impl {name}Stub {{");
        let _ = writeln!(s, "    /// Fails with `BadInterface` when the reference is of another interface.");
        let _ = writeln!(s, "    pub fn new(target: {orb}::ObjHandle) -> ::std::result::Result<Self, {orb}::OrbError> {{");
        let _ = writeln!(s, "        let iface = target.objref().interface;");
        let _ = writeln!(s, "        if iface != 0 && iface != {consts}_INTERFACE {{ return Err({orb}::OrbError::Exception({orb}::Exception::bad_interface(iface, {consts}_INTERFACE))); }}");
        let _ = writeln!(s, "        Ok({name}Stub {{ target, opts: {orb}::CallOptions::default() }})");
        let _ = writeln!(s, "    }}");
        let _ = writeln!(s, "    pub fn with_options(mut self, opts: {orb}::CallOptions) -> Self {{ self.opts = opts; self }}");
        let _ = writeln!(s, "    pub fn handle(&self) -> &{orb}::ObjHandle {{ &self.target }}");
        for (i, m) in service.methods.iter().enumerate() {
            if m.output_proto_type == ONEWAY {
                let _ = writeln!(s, "    /// One-way: returns once the invocation is handed to the transport.");
                let _ = writeln!(
                    s,
                    "    pub async fn {}(&self, req: {}) -> ::std::result::Result<(), {orb}::OrbError> {{ self.target.invoke_oneway({consts}_INTERFACE, {i}, {orb}::Outgoing::from_message(&req), &self.opts).await }}",
                    m.name, m.input_type
                );
            } else {
                let _ = writeln!(
                    s,
                    "    pub async fn {}(&self, req: {}) -> ::std::result::Result<{orb}::Received<{}>, {orb}::OrbError> {{ let inc = self.target.invoke({consts}_INTERFACE, {i}, {orb}::Outgoing::from_message(&req), &self.opts).await?; inc.decode() }}",
                    m.name, m.input_type, m.output_type
                );
            }
        }
        let _ = writeln!(s, "}}");
        buf.push_str(&s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_ids_are_fnv1a_of_the_full_name() {
        // Stable across builds and machines: they travel in headers and references.
        assert_eq!(interface_id(""), 0x811c9dc5);
        assert_eq!(interface_id("a"), 0xe40c292c);
        assert_ne!(interface_id("ssi.orb.svc.Names"), interface_id("ssi.orb.svc.RefCounts"));
    }

    #[test]
    fn field_names_follow_prost() {
        assert_eq!(rust_field("objRef"), "obj_ref");
        assert_eq!(rust_field("type"), "r#type");
        assert_eq!(rust_field("self"), "self_");
    }
}
