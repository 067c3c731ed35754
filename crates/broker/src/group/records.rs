//! The record format of `__consumer_offsets`: Kafka's own key and value schemas, so that the
//! tools that read Kafka's offsets topic read ours (big-endian; strings are an i16 length and
//! UTF-8; nullable strings use length -1; bytes are an i32 length).
//!
//! ```text
//! key v1  (offset commit):  version=1 i16 | group string | topic string | partition i32
//! key v2  (group metadata): version=2 i16 | group string
//! offset value v3:  version=3 i16 | offset i64 | leader_epoch i32 | metadata string | commit_timestamp i64
//! group value v3:   version=3 i16 | protocol_type string | generation i32 | protocol string? |
//!                   leader string? | current_state_timestamp i64 | members [member_id string |
//!                   group_instance_id string? | client_id string | client_host string |
//!                   rebalance_timeout i32 | session_timeout i32 | subscription bytes | assignment bytes]
//! ```
//! A null value is a tombstone: the offset or the group was deleted. Older value versions
//! (offset v1/v2 without a leader epoch; group v0-v2 with fewer member fields) are read too.

use bytes::{BufMut, Bytes, BytesMut};
use ferrymq_types::{LeaderEpoch, Offset, TopicPartition};

use super::state::{CommittedOffset, GroupSnapshot, MemberSnapshot};
use super::Generation;

const OFFSET_KEY_VERSION: i16 = 1;
const GROUP_KEY_VERSION: i16 = 2;
const OFFSET_VALUE_VERSION: i16 = 3;
const GROUP_VALUE_VERSION: i16 = 3;

/// A record of `__consumer_offsets` that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unreadable __consumer_offsets record: {0}")]
pub struct FormatError(pub &'static str);

/// What a key names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordKey {
    /// The committed offset of one partition for a group.
    Offset {
        /// Group id.
        group: String,
        /// The committed partition.
        tp: TopicPartition,
    },
    /// A group's metadata.
    Group {
        /// Group id.
        group: String,
    },
}

fn put_str(b: &mut BytesMut, s: &str) {
    b.put_i16(s.len().min(i16::MAX as usize) as i16);
    b.put_slice(&s.as_bytes()[..s.len().min(i16::MAX as usize)]);
}

fn put_opt_str(b: &mut BytesMut, s: &Option<String>) {
    match s {
        Some(s) => put_str(b, s),
        None => b.put_i16(-1),
    }
}

fn put_bytes(b: &mut BytesMut, v: &[u8]) {
    b.put_i32(v.len() as i32);
    b.put_slice(v);
}

/// The key of `group`'s committed offset for `tp`.
pub fn offset_key(group: &str, tp: &TopicPartition) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(OFFSET_KEY_VERSION);
    put_str(&mut b, group);
    put_str(&mut b, &tp.topic);
    b.put_i32(tp.partition.0);
    b.freeze()
}

/// The key of `group`'s metadata.
pub fn group_key(group: &str) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(GROUP_KEY_VERSION);
    put_str(&mut b, group);
    b.freeze()
}

/// The value of a committed offset.
pub fn offset_value(c: &CommittedOffset) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(OFFSET_VALUE_VERSION);
    b.put_i64(c.offset.0);
    b.put_i32(c.leader_epoch.map_or(-1, |e| e.0));
    put_str(&mut b, &c.metadata);
    b.put_i64(c.commit_timestamp_ms);
    b.freeze()
}

/// The value of a group's metadata.
pub fn group_value(s: &GroupSnapshot) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(GROUP_VALUE_VERSION);
    put_str(&mut b, &s.protocol_type);
    b.put_i32(s.generation.0);
    put_opt_str(&mut b, &s.protocol);
    put_opt_str(&mut b, &s.leader);
    b.put_i64(s.state_timestamp_ms);
    b.put_i32(s.members.len() as i32);
    for m in &s.members {
        put_str(&mut b, &m.member_id);
        put_opt_str(&mut b, &m.instance_id);
        put_str(&mut b, &m.client_id);
        put_str(&mut b, &m.client_host);
        b.put_i32(m.rebalance_timeout_ms);
        b.put_i32(m.session_timeout_ms);
        put_bytes(&mut b, &m.subscription);
        put_bytes(&mut b, &m.assignment);
    }
    b.freeze()
}

/// A cursor over a record's bytes.
struct Reader<'a> {
    b: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], FormatError> {
        if self.b.len() < n {
            return Err(FormatError("truncated"));
        }
        let (head, rest) = self.b.split_at(n);
        self.b = rest;
        Ok(head)
    }
    fn i16(&mut self) -> Result<i16, FormatError> {
        Ok(i16::from_be_bytes(
            self.take(2)?.try_into().expect("2 bytes"),
        ))
    }
    fn i32(&mut self) -> Result<i32, FormatError> {
        Ok(i32::from_be_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn i64(&mut self) -> Result<i64, FormatError> {
        Ok(i64::from_be_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    fn opt_str(&mut self) -> Result<Option<String>, FormatError> {
        let len = self.i16()?;
        if len < 0 {
            return Ok(None);
        }
        let raw = self.take(len as usize)?;
        String::from_utf8(raw.to_vec())
            .map(Some)
            .map_err(|_| FormatError("string is not UTF-8"))
    }
    fn str(&mut self) -> Result<String, FormatError> {
        self.opt_str()?.ok_or(FormatError("null string"))
    }
    fn bytes(&mut self) -> Result<Bytes, FormatError> {
        let len = self.i32()?;
        if len < 0 {
            return Ok(Bytes::new());
        }
        Ok(Bytes::copy_from_slice(self.take(len as usize)?))
    }
}

/// Reads a key.
pub fn decode_key(b: &[u8]) -> Result<RecordKey, FormatError> {
    let mut r = Reader { b };
    match r.i16()? {
        0 | 1 => Ok(RecordKey::Offset {
            group: r.str()?,
            tp: {
                let topic = r.str()?;
                TopicPartition::new(topic, r.i32()?)
            },
        }),
        2 => Ok(RecordKey::Group { group: r.str()? }),
        _ => Err(FormatError("unknown key version")),
    }
}

/// Reads an offset value.
pub fn decode_offset_value(b: &[u8]) -> Result<CommittedOffset, FormatError> {
    let mut r = Reader { b };
    let version = r.i16()?;
    if !(0..=OFFSET_VALUE_VERSION).contains(&version) {
        return Err(FormatError("unknown offset value version"));
    }
    let offset = Offset(r.i64()?);
    let leader_epoch = if version >= 3 { r.i32()? } else { -1 };
    let metadata = r.str()?;
    let commit_timestamp_ms = r.i64()?;
    Ok(CommittedOffset {
        offset,
        leader_epoch: (leader_epoch >= 0).then_some(LeaderEpoch(leader_epoch)),
        metadata,
        commit_timestamp_ms,
    })
}

/// Reads a group metadata value.
pub fn decode_group_value(b: &[u8]) -> Result<GroupSnapshot, FormatError> {
    let mut r = Reader { b };
    let version = r.i16()?;
    if !(0..=GROUP_VALUE_VERSION).contains(&version) {
        return Err(FormatError("unknown group value version"));
    }
    let protocol_type = r.str()?;
    let generation = Generation(r.i32()?);
    let protocol = r.opt_str()?;
    let leader = r.opt_str()?;
    let state_timestamp_ms = if version >= 2 { r.i64()? } else { -1 };
    let count = r.i32()?;
    let mut members = Vec::with_capacity(count.clamp(0, 1024) as usize);
    for _ in 0..count.max(0) {
        let member_id = r.str()?;
        let instance_id = if version >= 3 { r.opt_str()? } else { None };
        let client_id = r.str()?;
        let client_host = r.str()?;
        let rebalance_timeout_ms = if version >= 1 { r.i32()? } else { -1 };
        let session_timeout_ms = r.i32()?;
        let rebalance_timeout_ms = if version >= 1 {
            rebalance_timeout_ms
        } else {
            session_timeout_ms
        };
        members.push(MemberSnapshot {
            member_id,
            instance_id,
            client_id,
            client_host,
            rebalance_timeout_ms,
            session_timeout_ms,
            subscription: r.bytes()?,
            assignment: r.bytes()?,
        });
    }
    Ok(GroupSnapshot {
        protocol_type,
        generation,
        protocol,
        leader,
        state_timestamp_ms,
        members,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_values_round_trip() {
        let tp = TopicPartition::new("orders", 7);
        assert_eq!(
            decode_key(&offset_key("g1", &tp)).unwrap(),
            RecordKey::Offset {
                group: "g1".into(),
                tp
            }
        );
        assert_eq!(
            decode_key(&group_key("g1")).unwrap(),
            RecordKey::Group { group: "g1".into() }
        );
        let c = CommittedOffset {
            offset: Offset(42),
            leader_epoch: Some(LeaderEpoch(3)),
            metadata: "meta".into(),
            commit_timestamp_ms: 1_700_000_000_000,
        };
        assert_eq!(decode_offset_value(&offset_value(&c)).unwrap(), c);
        let s = GroupSnapshot {
            protocol_type: "consumer".into(),
            generation: Generation(5),
            protocol: Some("range".into()),
            leader: Some("m1".into()),
            state_timestamp_ms: 99,
            members: vec![MemberSnapshot {
                member_id: "m1".into(),
                instance_id: Some("i1".into()),
                client_id: "c".into(),
                client_host: "/127.0.0.1".into(),
                rebalance_timeout_ms: 300_000,
                session_timeout_ms: 10_000,
                subscription: Bytes::from_static(b"sub"),
                assignment: Bytes::from_static(b"asg"),
            }],
        };
        assert_eq!(decode_group_value(&group_value(&s)).unwrap(), s);
    }

    #[test]
    fn offset_key_bytes_are_kafkas() {
        // version 1, "g", "t", partition 2: what Kafka's OffsetCommitKey v1 serializes to.
        assert_eq!(
            &offset_key("g", &TopicPartition::new("t", 2))[..],
            &[0, 1, 0, 1, b'g', 0, 1, b't', 0, 0, 0, 2]
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(decode_key(&[0, 9]).is_err());
        assert!(decode_key(&[0, 1, 0, 50, b'x']).is_err());
        assert!(decode_offset_value(&[0, 3, 0]).is_err());
        assert!(decode_group_value(&[0, 3, 0, 2, b'a']).is_err());
    }
}
