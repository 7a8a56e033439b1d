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
    messagepack_serde::from_slice(bytes).map_err(|error| Error::Decode(error.to_string()))
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
}
