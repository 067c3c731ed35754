//! `meta.properties`: the identity of a data dir — the node that owns it and, once known, the
//! cluster it belongs to. Written at first start, completed when the node learns the cluster
//! id from the controller, and checked at every start, so a data dir is never served by the
//! wrong node or joined to the wrong cluster.

use std::fs;
use std::path::Path;

use ferrymq_types::NodeId;

use crate::error::{ControllerError, Result};

const FILE_NAME: &str = "meta.properties";
const FORMAT_VERSION: u32 = 1;

/// The identity recorded in a data dir.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaProperties {
    /// The node that owns the data dir.
    pub node_id: NodeId,
    /// The cluster the node belongs to, once it has joined one.
    pub cluster_id: Option<String>,
}

fn write(data_dir: &Path, props: &MetaProperties) -> std::io::Result<()> {
    let path = data_dir.join(FILE_NAME);
    let mut text = format!(
        "# written by ferrymq; do not edit\nversion={FORMAT_VERSION}\nnode.id={}\n",
        props.node_id.0
    );
    if let Some(c) = &props.cluster_id {
        text.push_str(&format!("cluster.id={c}\n"));
    }
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, text)?;
    fs::File::open(&tmp)?.sync_all()?;
    fs::rename(&tmp, &path)?;
    fs::File::open(data_dir)?.sync_all()
}

/// Reads the data dir's identity, or writes it if the dir is new. A different node id in an
/// existing dir is refused.
pub fn load_or_init(data_dir: &Path, node_id: NodeId) -> Result<MetaProperties> {
    let path = data_dir.join(FILE_NAME);
    let bad = |reason: String| ControllerError::Storage(format!("{}: {reason}", path.display()));
    match fs::read_to_string(&path) {
        Ok(text) => {
            let mut node = None;
            let mut cluster = None;
            for line in text.lines().filter(|l| !l.starts_with('#')) {
                match line.split_once('=') {
                    Some(("node.id", v)) => node = v.trim().parse::<i32>().ok(),
                    Some(("cluster.id", v)) => {
                        cluster = Some(v.trim().to_string()).filter(|c| !c.is_empty())
                    }
                    _ => {}
                }
            }
            let Some(node) = node else {
                return Err(bad("missing node.id".into()));
            };
            if NodeId(node) != node_id {
                return Err(bad(format!(
                    "data dir belongs to node {node}, not node {node_id}"
                )));
            }
            Ok(MetaProperties {
                node_id,
                cluster_id: cluster,
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            fs::create_dir_all(data_dir).map_err(|e| bad(e.to_string()))?;
            let props = MetaProperties {
                node_id,
                cluster_id: None,
            };
            write(data_dir, &props).map_err(|e| bad(e.to_string()))?;
            Ok(props)
        }
        Err(e) => Err(bad(e.to_string())),
    }
}

/// Records the cluster id the node joined (once; a different one is refused).
pub fn record_cluster_id(data_dir: &Path, cluster_id: &str) -> Result<()> {
    let mut props = load_or_init(data_dir, NodeId(read_node_id(data_dir)?))?;
    match &props.cluster_id {
        Some(c) if c == cluster_id => Ok(()),
        Some(c) => Err(ControllerError::Storage(format!(
            "data dir belongs to cluster {c}, not {cluster_id}"
        ))),
        None => {
            props.cluster_id = Some(cluster_id.to_string());
            write(data_dir, &props).map_err(|e| ControllerError::Storage(e.to_string()))
        }
    }
}

fn read_node_id(data_dir: &Path) -> Result<i32> {
    let text = fs::read_to_string(data_dir.join(FILE_NAME))
        .map_err(|e| ControllerError::Storage(e.to_string()))?;
    text.lines()
        .find_map(|l| {
            l.strip_prefix("node.id=")
                .and_then(|v| v.trim().parse().ok())
        })
        .ok_or_else(|| ControllerError::Storage("meta.properties has no node.id".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_is_fixed_at_first_start_and_checked_after() {
        let dir = tempfile::tempdir().unwrap();
        let a = load_or_init(dir.path(), NodeId(1)).unwrap();
        assert_eq!(a.cluster_id, None);
        record_cluster_id(dir.path(), "abc").unwrap();
        record_cluster_id(dir.path(), "abc").unwrap();
        assert!(record_cluster_id(dir.path(), "other").is_err());
        let b = load_or_init(dir.path(), NodeId(1)).unwrap();
        assert_eq!(b.cluster_id.as_deref(), Some("abc"));
        assert!(load_or_init(dir.path(), NodeId(2)).is_err());
    }
}
