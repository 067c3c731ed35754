//! `meta.properties`: the identity of a data dir (node id, cluster id, format version),
//! written at first start and checked at every start, so a data dir is never served by the
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
    /// The cluster the node belongs to.
    pub cluster_id: String,
}

/// Reads the data dir's identity, or writes it if the dir is new. A different node id in an
/// existing dir is refused.
pub fn load_or_init(
    data_dir: &Path,
    node_id: NodeId,
    new_cluster_id: impl FnOnce() -> String,
) -> Result<MetaProperties> {
    let path = data_dir.join(FILE_NAME);
    let bad = |reason: String| ControllerError::Storage(format!("{}: {reason}", path.display()));
    match fs::read_to_string(&path) {
        Ok(text) => {
            let mut node = None;
            let mut cluster = None;
            for line in text.lines().filter(|l| !l.starts_with('#')) {
                match line.split_once('=') {
                    Some(("node.id", v)) => node = v.trim().parse::<i32>().ok(),
                    Some(("cluster.id", v)) => cluster = Some(v.trim().to_string()),
                    _ => {}
                }
            }
            let (Some(node), Some(cluster)) = (node, cluster) else {
                return Err(bad("missing node.id or cluster.id".into()));
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
                cluster_id: new_cluster_id(),
            };
            let text = format!(
                "# written by ferrymq at first start; do not edit\nversion={FORMAT_VERSION}\nnode.id={}\ncluster.id={}\n",
                props.node_id.0, props.cluster_id
            );
            let tmp = path.with_extension("tmp");
            fs::write(&tmp, text).map_err(|e| bad(e.to_string()))?;
            fs::File::open(&tmp)
                .and_then(|f| f.sync_all())
                .map_err(|e| bad(e.to_string()))?;
            fs::rename(&tmp, &path).map_err(|e| bad(e.to_string()))?;
            Ok(props)
        }
        Err(e) => Err(bad(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_is_fixed_at_first_start_and_checked_after() {
        let dir = tempfile::tempdir().unwrap();
        let a = load_or_init(dir.path(), NodeId(1), || "abc".into()).unwrap();
        let b = load_or_init(dir.path(), NodeId(1), || "other".into()).unwrap();
        assert_eq!(a, b);
        assert_eq!(b.cluster_id, "abc");
        assert!(load_or_init(dir.path(), NodeId(2), || "x".into()).is_err());
    }
}
