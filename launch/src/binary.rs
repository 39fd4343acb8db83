//! Where the workspace's binaries are: beside the running executable (`moe` finds `gateway`
//! next to itself), or one directory up (a test binary in `target/<profile>/deps/` finds them
//! in `target/<profile>/`).

use std::path::PathBuf;

use crate::LaunchError;

/// The binary `name` of the package `package`, built beside the running executable.
pub fn sibling(name: &str, package: &str) -> Result<PathBuf, LaunchError> {
    let exe = std::env::current_exe().map_err(|source| LaunchError::File {
        path: PathBuf::from("the running executable"),
        source,
    })?;
    let looked: Vec<PathBuf> = exe.ancestors().skip(1).take(2).map(PathBuf::from).collect();
    looked
        .iter()
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
        .ok_or_else(|| LaunchError::NotBuilt {
            name: name.to_string(),
            package: package.to_string(),
            looked,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_binary_says_where_it_was_looked_for_and_how_to_build_it() {
        let error = sibling("no-such-binary", "no-such-package").unwrap_err();
        let message = error.to_string();
        assert!(
            message.contains("cargo build -p no-such-package"),
            "{message}"
        );
        let LaunchError::NotBuilt { looked, .. } = error else {
            panic!("{message}");
        };
        assert_eq!(looked.len(), 2);
        assert!(looked[0].ends_with("deps"), "{looked:?}");
    }
}
