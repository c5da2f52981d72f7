//! How a value crosses processes: [`Codec`], with [`Bytes`] (the default) and, behind the
//! `serde` feature, [`Json`].

use std::error::Error as StdError;
use std::fmt;

/// Turns a value into the bytes stored in Redis and published to the other processes, and back.
///
/// The leader encodes its value once per flight; every process that receives it decodes it once
/// and clones it to its local callers.
///
/// # Errors
///
/// An encoding error leaves the value with the leader's own callers and publishes nothing: the
/// leader gives up its lease, so another process runs the work. A decoding error reaches the
/// callers of the process that could not decode as [`Error::Decode`](crate::Error::Decode).
///
/// # Unwind safety
///
/// A codec that panics is user code panicking inside the flight: the panic reaches the local
/// caller that was driving the flight, the other local callers get
/// [`Error::Panicked`](crate::Error::Panicked), and a leader gives its lease up on the way out.
///
/// # Examples
///
/// ```
/// use coalescer_redis::Codec;
///
/// /// A `u64` as 8 big-endian bytes.
/// struct BigEndian;
///
/// impl Codec<u64> for BigEndian {
///     type Error = std::array::TryFromSliceError;
///     fn encode(&self, value: &u64) -> Result<Vec<u8>, Self::Error> {
///         Ok(value.to_be_bytes().to_vec())
///     }
///     fn decode(&self, bytes: &[u8]) -> Result<u64, Self::Error> {
///         Ok(u64::from_be_bytes(bytes.try_into()?))
///     }
/// }
///
/// assert_eq!(BigEndian.decode(&BigEndian.encode(&7).unwrap()).unwrap(), 7);
/// assert!(BigEndian.decode(b"short").is_err());
/// ```
pub trait Codec<V>: Send + Sync + 'static {
    /// What a failed encode or decode reports.
    type Error: StdError + Send + Sync + 'static;

    /// The bytes for `value`.
    ///
    /// # Errors
    ///
    /// When the value cannot be represented.
    fn encode(&self, value: &V) -> Result<Vec<u8>, Self::Error>;

    /// The value for `bytes` (which another process's [`encode`](Self::encode) produced, or
    /// anything else that was written under the key).
    ///
    /// # Errors
    ///
    /// When the bytes are not a value.
    fn decode(&self, bytes: &[u8]) -> Result<V, Self::Error>;
}

/// The default codec: the value is the bytes (`Vec<u8>`), or a UTF-8 `String`.
///
/// # Examples
///
/// ```
/// use coalescer_redis::{Bytes, Codec};
///
/// assert_eq!(Bytes.encode(&"hé".to_string()).unwrap(), "hé".as_bytes());
/// assert!(<Bytes as Codec<String>>::decode(&Bytes, &[0xff]).is_err());
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct Bytes;

impl Codec<Vec<u8>> for Bytes {
    type Error = std::convert::Infallible;

    fn encode(&self, value: &Vec<u8>) -> Result<Vec<u8>, Self::Error> {
        Ok(value.clone())
    }

    fn decode(&self, bytes: &[u8]) -> Result<Vec<u8>, Self::Error> {
        Ok(bytes.to_vec())
    }
}

impl Codec<String> for Bytes {
    type Error = std::string::FromUtf8Error;

    fn encode(&self, value: &String) -> Result<Vec<u8>, Self::Error> {
        Ok(value.clone().into_bytes())
    }

    fn decode(&self, bytes: &[u8]) -> Result<String, Self::Error> {
        String::from_utf8(bytes.to_vec())
    }
}

/// Any `serde` type as JSON (`serde_json`): readable in `redis-cli`, and tolerant of added
/// optional fields between versions of a fleet in the middle of a rollout.
///
/// # Examples
///
/// ```
/// use coalescer_redis::{Codec, Json};
///
/// let bytes = Json.encode(&vec![1u32, 2]).unwrap();
/// assert_eq!(bytes, b"[1,2]");
/// assert!(<Json as Codec<Vec<u32>>>::decode(&Json, b"{").is_err());
/// ```
#[cfg(feature = "serde")]
#[cfg_attr(docsrs, doc(cfg(feature = "serde")))]
#[derive(Clone, Copy, Debug, Default)]
pub struct Json;

#[cfg(feature = "serde")]
impl<V: serde::Serialize + serde::de::DeserializeOwned> Codec<V> for Json {
    type Error = serde_json::Error;

    fn encode(&self, value: &V) -> Result<Vec<u8>, Self::Error> {
        serde_json::to_vec(value)
    }

    fn decode(&self, bytes: &[u8]) -> Result<V, Self::Error> {
        serde_json::from_slice(bytes)
    }
}

/// A codec's error, with its type erased (what [`Error::Decode`](crate::Error::Decode) holds).
#[derive(Debug)]
pub struct CodecError(Box<dyn StdError + Send + Sync>);

impl CodecError {
    pub(crate) fn new(error: impl StdError + Send + Sync + 'static) -> Self {
        Self(Box::new(error))
    }

    /// The codec's own error.
    pub fn inner(&self) -> &(dyn StdError + Send + Sync + 'static) {
        &*self.0
    }
}

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl StdError for CodecError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&*self.0)
    }
}
