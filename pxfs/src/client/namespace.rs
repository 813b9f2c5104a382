//! Where the volumes are in the global namespace: crossing from a directory of one volume
//! into the root of another (looking up `www` in `/` yields the root of the `/www` volume).

/// Every volume's mount path in the namespace, with its id.
pub(super) struct Mounts(Vec<(String, u32)>);

impl Mounts {
    pub(super) fn new(mounts: impl IntoIterator<Item = (String, u32)>) -> Mounts {
        Mounts(mounts.into_iter().collect())
    }

    /// The volume mounted exactly at `path`, other than the root volume.
    pub(super) fn crossing(&self, path: &str) -> Option<u32> {
        self.0.iter().find(|(p, _)| p != "/" && p == path).map(|(_, id)| *id)
    }

    /// Volumes mounted directly below `path`: (name, volume).
    pub(super) fn below(&self, path: &str) -> Vec<(String, u32)> {
        self.0
            .iter()
            .filter(|(p, _)| p != "/")
            .filter_map(|(p, id)| {
                let (parent, name) = p.rsplit_once('/')?;
                let parent = if parent.is_empty() { "/" } else { parent };
                (parent == path).then(|| (name.to_string(), *id))
            })
            .collect()
    }
}

/// The path of `name` in directory `dir`.
pub(super) fn join(dir: &str, name: &str) -> String {
    if dir == "/" {
        format!("/{name}")
    } else {
        format!("{dir}/{name}")
    }
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
        assert_eq!(m.crossing("/www"), Some(1));
        assert_eq!(m.crossing("/www/img"), Some(2));
        assert_eq!(m.crossing("/"), None);
        assert_eq!(m.crossing("/ww"), None);
        assert_eq!(m.crossing("/www/"), None);
    }

    #[test]
    fn a_listing_shows_the_volumes_mounted_directly_below() {
        let m = mounts();
        let mut root = m.below("/");
        root.sort();
        assert_eq!(root, vec![("db".to_string(), 3), ("www".to_string(), 1)]);
        assert_eq!(m.below("/www"), vec![("img".to_string(), 2)]);
        assert!(m.below("/db").is_empty());
    }

    #[test]
    fn names_join_below_the_root_and_below_a_directory() {
        assert_eq!(join("/", "a"), "/a");
        assert_eq!(join("/www", "a"), "/www/a");
    }
}
