//! The four Lua scripts of the protocol, and the Redis names of one key.
//!
//! Per key, under `{prefix}:{key}`:
//!
//! | name | what | written by | lifetime |
//! |---|---|---|---|
//! | `…:value` | the last result (the codec's bytes) | [`COMPLETE`] | the group's linger time |
//! | `…:lease` | the leader's fencing token | [`ACQUIRE`], [`RENEW`] | the lease time, renewed |
//! | `…:fence` | the per-key token counter | [`ACQUIRE`] (INCR) | no expiry |
//! | `…:wake` (a channel) | `v` + bytes (a result) or `g` (gave up) | [`COMPLETE`], [`RELEASE`] | — |
//!
//! No suffix is a suffix of another, so two user keys never share a Redis name.
//!
//! The fence counter starts, when it does not exist (first use, or a server that restarted
//! without persistence), at the server's clock in microseconds, so that tokens after a restart
//! are still larger than the ones before it (as long as the server's clock did not go back).

/// Decides, atomically: a result is there (`{0, bytes}`), the lease is free (`{1, token}`: the
/// caller leads), or it is held (`{2, pttl}`: follow, and re-check after `pttl` ms at the latest).
///
/// KEYS: value, lease, fence. ARGV: lease in ms.
pub(crate) const ACQUIRE: &str = r"
local v = redis.call('GET', KEYS[1])
if v then return {0, v} end
local ttl = redis.call('PTTL', KEYS[2])
if ttl > 0 then return {2, ttl} end
if ttl == -1 then
  redis.call('PEXPIRE', KEYS[2], ARGV[1])
  return {2, tonumber(ARGV[1])}
end
if redis.call('EXISTS', KEYS[3]) == 0 then
  local now = redis.call('TIME')
  redis.call('SET', KEYS[3], string.format('%.0f', now[1] * 1000000 + now[2]))
end
local token = redis.call('INCR', KEYS[3])
redis.call('SET', KEYS[2], string.format('%.0f', token), 'PX', ARGV[1])
return {1, token}
";

/// Stores and publishes the result if the caller's token still holds the lease (`1`), else
/// changes nothing (`0`).
///
/// KEYS: value, lease. ARGV: token, bytes, linger in ms (0: not stored), channel.
pub(crate) const COMPLETE: &str = r"
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[2])
if tonumber(ARGV[3]) > 0 then redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3]) end
redis.call('PUBLISH', ARGV[4], 'v' .. ARGV[2])
return 1
";

/// Extends the lease if the caller's token holds it (`1`), else `0`.
///
/// KEYS: lease. ARGV: token, lease in ms.
pub(crate) const RENEW: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
";

/// Frees the lease if the caller's token holds it and tells the followers (`1`), else `0`.
///
/// KEYS: lease. ARGV: token, channel.
pub(crate) const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('PUBLISH', ARGV[2], 'g')
  return 1
end
return 0
";

/// The four scripts, hashed once per group.
#[derive(Debug)]
pub(crate) struct Scripts {
    pub(crate) acquire: redis::Script,
    pub(crate) complete: redis::Script,
    pub(crate) renew: redis::Script,
    pub(crate) release: redis::Script,
}

impl Scripts {
    pub(crate) fn new() -> Self {
        Self {
            acquire: redis::Script::new(ACQUIRE),
            complete: redis::Script::new(COMPLETE),
            renew: redis::Script::new(RENEW),
            release: redis::Script::new(RELEASE),
        }
    }
}

/// The Redis names of one key.
#[derive(Debug)]
pub(crate) struct Names {
    pub(crate) value: String,
    pub(crate) lease: String,
    pub(crate) fence: String,
    pub(crate) channel: String,
}

impl Names {
    pub(crate) fn new(prefix: &str, key: &str) -> Self {
        let base = format!("{prefix}:{key}");
        Self {
            value: format!("{base}:value"),
            lease: format!("{base}:lease"),
            fence: format!("{base}:fence"),
            channel: format!("{base}:wake"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Names;

    #[test]
    fn names_of_different_keys_never_collide() {
        let keys = ["a", "a:value", "a:lease", "a:fence", "a:wake", "a:", ":a", ""];
        let mut seen = std::collections::HashSet::new();
        for key in keys {
            let n = Names::new("p", key);
            for name in [n.value, n.lease, n.fence] {
                assert!(seen.insert(name.clone()), "{name} used twice");
            }
        }
    }
}
