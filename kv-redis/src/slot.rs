//! Redis Cluster hash slots: the slot a key lives in (CRC16 of the key or of its `{hash tag}`,
//! modulo 16384), and a hash tag for every slot, so that the request key an increment or swap
//! writes lives in the same slot as its data key (a Lua script may only touch keys of one slot).

use std::sync::OnceLock;

/// The number of hash slots of a Redis Cluster.
pub const SLOTS: u16 = 16384;

/// The hash slot of `key`, as `CLUSTER KEYSLOT` computes it.
pub fn key_slot(key: &[u8]) -> u16 {
    let hashed = hash_tag(key).unwrap_or(key);
    crc16::State::<crc16::XMODEM>::calculate(hashed) % SLOTS
}

/// The part of `key` Redis hashes instead of the whole key: the bytes between the first `{`
/// and the first `}` after it, when there are any.
fn hash_tag(key: &[u8]) -> Option<&[u8]> {
    let open = key.iter().position(|&byte| byte == b'{')?;
    let inner = &key[open + 1..];
    let close = inner.iter().position(|&byte| byte == b'}')?;
    (close > 0).then(|| &inner[..close])
}

/// A short hash tag that puts a key in `slot`: the smallest decimal number hashing there.
pub fn slot_tag(slot: u16) -> &'static str {
    static TAGS: OnceLock<Vec<String>> = OnceLock::new();
    let tags = TAGS.get_or_init(|| {
        // About 170,000 CRC16s of short strings (a few milliseconds, once per process); every
        // slot is reached, as the test below checks.
        let mut tags = vec![String::new(); usize::from(SLOTS)];
        let mut missing = tags.len();
        let mut number: u32 = 0;
        while missing > 0 && number < u32::MAX {
            let text = number.to_string();
            let tag = &mut tags[usize::from(key_slot(text.as_bytes()))];
            if tag.is_empty() {
                *tag = text;
                missing -= 1;
            }
            number += 1;
        }
        tags
    });
    &tags[usize::from(slot % SLOTS)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_match_redis() {
        // Values from `redis-cli CLUSTER KEYSLOT` and the cluster specification.
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"123456789"), 0x31C3 % SLOTS);
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        assert_eq!(key_slot(b"foo{}{bar}"), key_slot(b"foo{}{bar}"));
        assert_ne!(key_slot(b"foo{}{bar}"), key_slot(b"bar"));
        assert_eq!(key_slot(b"foo{{bar}}zap"), key_slot(b"{bar"));
        assert_eq!(key_slot(b"foo{bar}{zap}"), key_slot(b"bar"));
    }

    #[test]
    fn every_slot_has_a_tag() {
        for slot in 0..SLOTS {
            let tag = slot_tag(slot);
            assert!(!tag.is_empty() && tag.len() <= 6, "{slot}: {tag:?}");
            assert_eq!(key_slot(format!("prefix/{{{tag}}}/x").as_bytes()), slot);
        }
    }
}
