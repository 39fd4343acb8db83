//! Every etcd key the cluster uses, typed, and nothing else: building a key from names and
//! parsing a key back into what it names. What is stored under the keys lives in `records`.
//!
//! The layout is a public interface — operators read it with `etcdctl get --prefix /moe/v1/` —
//! so it only ever grows:
//!
//! | key                                | value                      | lifetime               |
//! |------------------------------------|----------------------------|------------------------|
//! | `/moe/v1/<cluster>/nodes/<node>`   | `NodeRecord` JSON          | the node's lease       |
//! | `/moe/v1/<cluster>/placement`      | `Placement` JSON           | until replaced         |
//! | `/moe/v1/<cluster>/leader`         | the leader coordinator id  | the leader's lease     |
//! | `/moe/v1/<cluster>/stats/<gateway>`| `GatewayStats` JSON        | until replaced         |
//!
//! Cluster names, node ids and gateway ids are [`Name`]s: 1 to 63 characters of
//! `A-Z a-z 0-9 . _ -`, starting with a letter or a digit, so that a name never contains the key
//! separator `/` and never reads as a flag on an `etcdctl` command line.

use std::borrow::Borrow;
use std::fmt;

/// The root every key of every cluster lives under.
pub const ROOT: &str = "/moe/v1/";

/// The longest name allowed.
pub const NAME_MAX_LEN: usize = 63;

const NODES: &str = "nodes/";
const PLACEMENT: &str = "placement";
const LEADER: &str = "leader";
const STATS: &str = "stats/";

/// Why a name or a key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error(
        "{what} {name:?} is not a valid name: {reason} \
         (use 1 to {NAME_MAX_LEN} characters of A-Z a-z 0-9 . _ -, starting with a letter or digit)"
    )]
    InvalidName {
        what: &'static str,
        name: String,
        reason: &'static str,
    },
    #[error("{key:?} is not a key of cluster {cluster:?} (expected {ROOT}{cluster}/...)")]
    Foreign { key: String, cluster: String },
}

/// A validated cluster name, node id or gateway id.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Name(String);

impl Name {
    /// Checks `value` against the name rules; `what` ("node id", "cluster name", ...) names it
    /// in the error.
    pub fn new(what: &'static str, value: &str) -> Result<Name, KeyError> {
        let refuse = |reason| {
            Err(KeyError::InvalidName {
                what,
                name: value.to_string(),
                reason,
            })
        };
        let Some(first) = value.chars().next() else {
            return refuse("it is empty");
        };
        if value.len() > NAME_MAX_LEN {
            return refuse("it is too long");
        }
        if !first.is_ascii_alphanumeric() {
            return refuse("it does not start with a letter or digit");
        }
        if !value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        {
            return refuse("it contains a character outside the allowed set");
        }
        Ok(Name(value.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for Name {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for Name {
    fn borrow(&self) -> &str {
        &self.0
    }
}

/// One key of a cluster, by what it names.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Key {
    /// `nodes/<node>`: an expert node's record.
    Node(Name),
    /// `placement`: the placement document.
    Placement,
    /// `leader`: the leader coordinator's id.
    Leader,
    /// `stats/<gateway>`: a gateway's popularity report.
    Stats(Name),
}

/// The keys of one cluster, all under `/moe/v1/<cluster>/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterKeys {
    cluster: Name,
    prefix: String,
}

impl ClusterKeys {
    /// The keys of the cluster named `cluster` (checked against the name rules).
    pub fn new(cluster: &str) -> Result<ClusterKeys, KeyError> {
        let cluster = Name::new("cluster name", cluster)?;
        let prefix = format!("{ROOT}{cluster}/");
        Ok(ClusterKeys { cluster, prefix })
    }

    pub fn cluster(&self) -> &Name {
        &self.cluster
    }

    /// `/moe/v1/<cluster>/`: every key of the cluster starts with it.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The full key for `key`.
    pub fn key(&self, key: &Key) -> String {
        match key {
            Key::Node(node) => format!("{}{NODES}{node}", self.prefix),
            Key::Placement => format!("{}{PLACEMENT}", self.prefix),
            Key::Leader => format!("{}{LEADER}", self.prefix),
            Key::Stats(gateway) => format!("{}{STATS}{gateway}", self.prefix),
        }
    }

    /// `/moe/v1/<cluster>/nodes/<node>`.
    pub fn node(&self, node: &Name) -> String {
        self.key(&Key::Node(node.clone()))
    }

    /// `/moe/v1/<cluster>/nodes/`: every node record starts with it.
    pub fn nodes_prefix(&self) -> String {
        format!("{}{NODES}", self.prefix)
    }

    /// `/moe/v1/<cluster>/placement`.
    pub fn placement(&self) -> String {
        self.key(&Key::Placement)
    }

    /// `/moe/v1/<cluster>/leader`.
    pub fn leader(&self) -> String {
        self.key(&Key::Leader)
    }

    /// `/moe/v1/<cluster>/stats/<gateway>`.
    pub fn stats(&self, gateway: &Name) -> String {
        self.key(&Key::Stats(gateway.clone()))
    }

    /// `/moe/v1/<cluster>/stats/`: every gateway report starts with it.
    pub fn stats_prefix(&self) -> String {
        format!("{}{STATS}", self.prefix)
    }

    /// What a full key of this cluster names; keys of other clusters, outside the layout or
    /// with invalid names are refused.
    pub fn parse(&self, key: &str) -> Result<Key, KeyError> {
        let foreign = || KeyError::Foreign {
            key: key.to_string(),
            cluster: self.cluster.to_string(),
        };
        let rest = key.strip_prefix(&self.prefix).ok_or_else(foreign)?;
        if rest == PLACEMENT {
            Ok(Key::Placement)
        } else if rest == LEADER {
            Ok(Key::Leader)
        } else if let Some(node) = rest.strip_prefix(NODES) {
            Name::new("node id", node)
                .map(Key::Node)
                .map_err(|_| foreign())
        } else if let Some(gateway) = rest.strip_prefix(STATS) {
            Name::new("gateway id", gateway)
                .map(Key::Stats)
                .map_err(|_| foreign())
        } else {
            Err(foreign())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(value: &str) -> Name {
        Name::new("test name", value).unwrap()
    }

    #[test]
    fn keys_have_the_documented_layout() {
        let keys = ClusterKeys::new("prod-eu").unwrap();
        assert_eq!(keys.prefix(), "/moe/v1/prod-eu/");
        assert_eq!(keys.node(&name("node-a")), "/moe/v1/prod-eu/nodes/node-a");
        assert_eq!(keys.nodes_prefix(), "/moe/v1/prod-eu/nodes/");
        assert_eq!(keys.placement(), "/moe/v1/prod-eu/placement");
        assert_eq!(keys.leader(), "/moe/v1/prod-eu/leader");
        assert_eq!(keys.stats(&name("gw.1")), "/moe/v1/prod-eu/stats/gw.1");
        assert_eq!(keys.stats_prefix(), "/moe/v1/prod-eu/stats/");
        assert!(keys.node(&name("x")).starts_with(&keys.nodes_prefix()));
        assert!(keys.stats(&name("x")).starts_with(&keys.stats_prefix()));
    }

    #[test]
    fn every_key_round_trips() {
        let keys = ClusterKeys::new("c1").unwrap();
        let all = [
            Key::Node(name("node-a")),
            Key::Node(name("A.b_c-9")),
            Key::Placement,
            Key::Leader,
            Key::Stats(name("gw-1")),
            Key::Node(name(&"n".repeat(NAME_MAX_LEN))),
        ];
        for key in all {
            assert_eq!(keys.parse(&keys.key(&key)), Ok(key));
        }
    }

    #[test]
    fn foreign_keys_are_refused() {
        let keys = ClusterKeys::new("c1").unwrap();
        for key in [
            "/moe/v1/c2/nodes/a",
            "/moe/v1/c1",
            "/moe/v1/c1/",
            "/moe/v2/c1/placement",
            "moe/v1/c1/placement",
            "/moe/v1/c1/placement/x",
            "/moe/v1/c1/placements",
            "/moe/v1/c1/leaders",
            "/moe/v1/c1/nodes/",
            "/moe/v1/c1/nodes/a/b",
            "/moe/v1/c1/nodes/-a",
            "/moe/v1/c1/stats/",
            "/moe/v1/c1/stats/g w",
            "/moe/v1/c1/other/a",
            "/moe/v1/c10/nodes/a",
        ] {
            assert!(
                matches!(keys.parse(key), Err(KeyError::Foreign { .. })),
                "{key} was accepted"
            );
        }
    }

    #[test]
    fn names_outside_the_charset_are_refused_with_the_rule() {
        for bad in [
            "",
            "a/b",
            "-flag",
            ".",
            "..",
            "_a",
            "a b",
            "né",
            "a\n",
            &"n".repeat(NAME_MAX_LEN + 1),
        ] {
            let error = Name::new("node id", bad).unwrap_err();
            let message = error.to_string();
            assert!(message.starts_with("node id "), "{message}");
            assert!(message.contains("A-Z a-z 0-9 . _ -"), "{message}");
        }
        for good in ["a", "0", "node-7", "gpu.host_3", "Z-._"] {
            assert_eq!(Name::new("node id", good).unwrap().as_str(), good);
        }
        assert!(matches!(
            ClusterKeys::new("bad/cluster"),
            Err(KeyError::InvalidName {
                what: "cluster name",
                ..
            })
        ));
    }
}
