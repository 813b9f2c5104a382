//! Node authentication with a shared cluster key.
//!
//! Handshake on every new link (before any invocation is accepted):
//! 1. dialer → acceptor  HELLO     {cluster, node, incarnation, nonce_d}
//! 2. acceptor → dialer  CHALLENGE {cluster, node, incarnation, nonce_a, mac_a}
//! 3. dialer → acceptor  PROOF     {mac_d}
//!
//! `mac_x = HMAC-SHA256(key, label_x ‖ cluster ‖ nonce_d ‖ nonce_a ‖ ids ‖ incarnations)`, with
//! different labels for the two directions, so each side proves knowledge of the key on a
//! fresh nonce of the other and nothing can be replayed or reflected. The link carries no
//! per-message MAC: the interconnect is assumed private once peers are authenticated (see
//! ARCHITECTURE.md, security).

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

pub const NONCE_LEN: usize = 32;
const LABEL_ACCEPT: &[u8] = b"ssi-orb-accept-v1";
const LABEL_DIAL: &[u8] = b"ssi-orb-dial-v1";

/// The cluster's shared secret.
#[derive(Clone)]
pub struct ClusterKey(Vec<u8>);

impl std::fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterKey(..)")
    }
}

/// Why a key file's text is not a cluster key.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("a cluster key is an even number (at least 32) of hex digits, found {0} characters")]
    Length(usize),
    #[error("not a hex digit pair at offset {offset}: {pair:?}")]
    NotHex { offset: usize, pair: String },
}

impl ClusterKey {
    /// A key file holds at least 32 hex digits (whitespace ignored).
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        let hex: String = text.chars().filter(|c| !c.is_whitespace()).collect();
        if hex.len() < 32 || hex.len() % 2 != 0 {
            return Err(KeyError::Length(hex.len()));
        }
        let mut out = Vec::with_capacity(hex.len() / 2);
        for i in (0..hex.len()).step_by(2) {
            let pair = hex.get(i..i + 2).ok_or_else(|| KeyError::NotHex { offset: i, pair: hex[i..].chars().take(2).collect() })?;
            let b = u8::from_str_radix(pair, 16).map_err(|_| KeyError::NotHex { offset: i, pair: pair.to_string() })?;
            out.push(b);
        }
        Ok(ClusterKey(out))
    }
    /// A new random key, as hex text for a key file.
    pub fn generate_hex() -> String {
        let mut b = [0u8; 32];
        getrandom::fill(&mut b).expect("kernel random source");
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    fn mac(&self, label: &[u8], t: &Transcript<'_>) -> HmacSha256 {
        let mut m = HmacSha256::new_from_slice(&self.0).expect("HMAC takes any key length");
        m.update(label);
        m.update(&(t.cluster.len() as u32).to_le_bytes());
        m.update(t.cluster.as_bytes());
        m.update(t.nonce_dial);
        m.update(t.nonce_accept);
        m.update(&t.dial_node.to_le_bytes());
        m.update(&t.accept_node.to_le_bytes());
        m.update(&t.dial_inc.to_le_bytes());
        m.update(&t.accept_inc.to_le_bytes());
        m
    }
    pub fn accept_mac(&self, t: &Transcript<'_>) -> Vec<u8> {
        self.mac(LABEL_ACCEPT, t).finalize().into_bytes().to_vec()
    }
    pub fn dial_mac(&self, t: &Transcript<'_>) -> Vec<u8> {
        self.mac(LABEL_DIAL, t).finalize().into_bytes().to_vec()
    }
    /// Constant-time checks.
    pub fn verify_accept(&self, t: &Transcript<'_>, mac: &[u8]) -> bool {
        self.mac(LABEL_ACCEPT, t).verify_slice(mac).is_ok()
    }
    pub fn verify_dial(&self, t: &Transcript<'_>, mac: &[u8]) -> bool {
        self.mac(LABEL_DIAL, t).verify_slice(mac).is_ok()
    }
}

/// What both MACs bind.
pub struct Transcript<'a> {
    pub cluster: &'a str,
    pub nonce_dial: &'a [u8],
    pub nonce_accept: &'a [u8],
    pub dial_node: u32,
    pub accept_node: u32,
    pub dial_inc: u64,
    pub accept_inc: u64,
}

pub fn nonce() -> Vec<u8> {
    let mut b = vec![0u8; NONCE_LEN];
    getrandom::fill(&mut b).expect("kernel random source");
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t<'a>(nd: &'a [u8], na: &'a [u8]) -> Transcript<'a> {
        Transcript { cluster: "c", nonce_dial: nd, nonce_accept: na, dial_node: 1, accept_node: 2, dial_inc: 5, accept_inc: 6 }
    }

    #[test]
    fn macs_verify_only_with_the_same_key_and_direction() {
        let k = ClusterKey::parse(&ClusterKey::generate_hex()).unwrap();
        let other = ClusterKey::parse(&ClusterKey::generate_hex()).unwrap();
        let (nd, na) = (nonce(), nonce());
        let m = k.accept_mac(&t(&nd, &na));
        assert!(k.verify_accept(&t(&nd, &na), &m));
        assert!(!other.verify_accept(&t(&nd, &na), &m));
        assert!(!k.verify_dial(&t(&nd, &na), &m), "a reflected MAC must not verify");
        let nd2 = nonce();
        assert!(!k.verify_accept(&t(&nd2, &na), &m), "a replayed MAC must not verify on a new nonce");
    }

    #[test]
    fn key_files_are_checked() {
        assert_eq!(ClusterKey::parse("abcd").unwrap_err(), KeyError::Length(4));
        assert_eq!(ClusterKey::parse(&"zz".repeat(20)).unwrap_err(), KeyError::NotHex { offset: 0, pair: "zz".into() });
        assert!(ClusterKey::parse(&format!("{}\n", "ab".repeat(16))).is_ok());
    }
}
