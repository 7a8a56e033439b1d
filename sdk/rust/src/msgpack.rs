//! Typed content and state: serde values as MessagePack.
//!
//! Structs are maps keyed by field name and enums name their variant, so a
//! host program reads them with `rmp_serde::from_slice` and writes them with
//! `rmp_serde::to_vec_named`.

use alloc::string::ToString;
use alloc::vec::Vec;

use crate::Error;

/// `value` as MessagePack.
///
/// ```
/// let bytes = caxton_agent::msgpack::to_vec(&(1u8, "two")).expect("codec");
/// assert_eq!(bytes, [0x92, 0x01, 0xa3, b't', b'w', b'o']);
/// ```
pub fn to_vec<T: serde::Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, Error> {
    messagepack_serde::to_vec(value).map_err(|error| Error::Encode(error.to_string()))
}

/// A `T` decoded from MessagePack; trailing bytes are an error.
///
/// ```
/// let pair: (u8, String) = caxton_agent::msgpack::from_slice(&[0x92, 0x01, 0xa3, b't', b'w', b'o']).expect("codec");
/// assert_eq!(pair, (1, "two".to_string()));
/// ```
pub fn from_slice<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    let read = core::cell::Cell::new(0);
    let reader = Counted {
        inner: SliceReader::new(bytes),
        read: &read,
    };
    let value = messagepack_serde::de::from_core_reader(reader)
        .map_err(|error| Error::Decode(error.to_string()))?;
    // The value may end before the bytes do (text read as a number reads
    // its first byte): what follows it makes the whole no value of `T`.
    match bytes.len() - read.get() {
        0 => Ok(value),
        left => Err(Error::Decode(alloc::format!(
            "{left} bytes follow the value (of {})",
            bytes.len()
        ))),
    }
}

use messagepack_serde::messagepack_core::io::{IoRead, Reference, SliceReader};

/// A slice reader that counts what it hands out.
struct Counted<'de, 'c> {
    inner: SliceReader<'de>,
    read: &'c core::cell::Cell<usize>,
}

impl<'de> IoRead<'de> for Counted<'de, '_> {
    type Error = <SliceReader<'de> as IoRead<'de>>::Error;

    fn read_slice<'a>(&'a mut self, len: usize) -> Result<Reference<'de, 'a>, Self::Error> {
        let slice = self.inner.read_slice(len)?;
        self.read.set(self.read.get() + len);
        Ok(slice)
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Order {
        sku: alloc::string::String,
        quantity: u32,
        rush: bool,
    }

    #[test]
    fn structs_interoperate_with_the_hosts_named_encoding() {
        let order = Order {
            sku: "sku-7".into(),
            quantity: 3,
            rush: true,
        };
        let ours = to_vec(&order).expect("codec");
        assert_eq!(ours, rmp_serde::to_vec_named(&order).expect("codec"));
        assert_eq!(rmp_serde::from_slice::<Order>(&ours).expect("codec"), order);
        let theirs = rmp_serde::to_vec_named(&order).expect("codec");
        assert_eq!(from_slice::<Order>(&theirs).expect("codec"), order);
    }

    #[test]
    fn bad_bytes_are_a_decode_error_not_a_panic() {
        let error = from_slice::<Order>(&[0xc1]).expect_err("bad bytes");
        assert_eq!(error.code(), 20);
        assert!(matches!(error, Error::Decode(_)), "{error:?}");
        assert!(from_slice::<u32>(&[]).is_err());
    }

    /// A value followed by more bytes is not a `T`: text whose first byte
    /// reads as a number is refused, not taken for that number.
    #[test]
    fn bytes_after_the_value_are_a_decode_error() {
        let error = from_slice::<u32>(b"hello").expect_err("text is no u32");
        assert_eq!(error.code(), 20);
        assert!(
            matches!(&error, Error::Decode(why) if why.contains("4 bytes follow")),
            "{error:?}"
        );
        let order = Order {
            sku: "sku-7".into(),
            quantity: 3,
            rush: true,
        };
        let mut bytes = to_vec(&order).expect("codec");
        assert_eq!(from_slice::<Order>(&bytes).expect("whole"), order);
        bytes.push(0x01);
        assert!(from_slice::<Order>(&bytes).is_err());
    }
}
