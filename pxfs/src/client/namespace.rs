//! Where the volumes are in the global namespace: crossing from a directory of one volume
//! into the root of another (looking up `www` in `/` yields the root of the `/www` volume).

//! Paths in the namespace are bytes, as names are (any byte but '/' and NUL).

/// Every volume's mount path in the namespace, with its id.
pub(super) struct Mounts(Vec<(String, u32)>);

impl Mounts {
    pub(super) fn new(mounts: impl IntoIterator<Item = (String, u32)>) -> Mounts {
        Mounts(mounts.into_iter().collect())
    }

    /// The volume mounted exactly at `path`, other than the root volume.
    pub(super) fn crossing(&self, path: &[u8]) -> Option<u32> {
        self.0.iter().find(|(p, _)| p != "/" && p.as_bytes() == path).map(|(_, id)| *id)
    }

    /// Volumes mounted directly below `path`: (name, volume).
    pub(super) fn below(&self, path: &[u8]) -> Vec<(String, u32)> {
        self.0
            .iter()
            .filter(|(p, _)| p != "/")
            .filter_map(|(p, id)| {
                let (parent, name) = p.rsplit_once('/')?;
                let parent = if parent.is_empty() { "/" } else { parent };
                (parent.as_bytes() == path).then(|| (name.to_string(), *id))
            })
            .collect()
    }
}

/// The path of `name` in directory `dir`.
pub(super) fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(dir.len() + 1 + name.len());
    p.extend_from_slice(dir);
    if dir != b"/" {
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mounts() -> Mounts {
        Mounts::new([("/".to_string(), 0), ("/www".to_string(), 1), ("/www/img".to_string(), 2), ("/db".to_string(), 3)])
    }

    #[test]
    fn a_crossing_is_an_exact_mount_path_and_never_the_root() {
        let m = mounts();
        assert_eq!(m.crossing(b"/www"), Some(1));
        assert_eq!(m.crossing(b"/www/img"), Some(2));
        assert_eq!(m.crossing(b"/"), None);
        assert_eq!(m.crossing(b"/ww"), None);
        assert_eq!(m.crossing(b"/www/"), None);
    }

    #[test]
    fn a_listing_shows_the_volumes_mounted_directly_below() {
        let m = mounts();
        let mut root = m.below(b"/");
        root.sort();
        assert_eq!(root, vec![("db".to_string(), 3), ("www".to_string(), 1)]);
        assert_eq!(m.below(b"/www"), vec![("img".to_string(), 2)]);
        assert!(m.below(b"/db").is_empty());
    }

    #[test]
    fn names_join_below_the_root_and_below_a_directory() {
        assert_eq!(join(b"/", b"a"), b"/a");
        assert_eq!(join(b"/www", b"a"), b"/www/a");
        assert_eq!(join(b"/www", b"\xff"), b"/www/\xff");
    }
}
