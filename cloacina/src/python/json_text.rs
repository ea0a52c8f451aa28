//! Stored JSON text converted to Python objects in one pass: each value the parser reads goes
//! straight to pythonize, with no `serde_json::Value` tree built in between.

use std::cell::RefCell;
use std::fmt;

use pyo3::prelude::*;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{self, Serialize, SerializeMap, SerializeSeq, Serializer};

/// The Python object for a JSON text (as `json.loads` would build it).
pub(crate) fn json_to_py(py: Python<'_>, json: &str) -> PyResult<PyObject> {
    let mut parser = serde_json::Deserializer::from_str(json);
    let object = pythonize::pythonize(py, &Transcode::new(&mut parser))?;
    parser
        .end()
        .map_err(|e| pyo3::exceptions::PyValueError::new_err(e.to_string()))?;
    Ok(object)
}

/// A deserializer seen as a serializable value: serializing it reads one value from the
/// deserializer and writes it to the serializer as it goes.
struct Transcode<D>(RefCell<Option<D>>);

impl<D> Transcode<D> {
    fn new(deserializer: D) -> Self {
        Self(RefCell::new(Some(deserializer)))
    }
}

impl<'de, D: Deserializer<'de>> Serialize for Transcode<D> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let deserializer = self
            .0
            .borrow_mut()
            .take()
            .ok_or_else(|| ser::Error::custom("a value was transcoded twice"))?;
        let failed = RefCell::new(None);
        deserializer
            .deserialize_any(Forward {
                serializer,
                failed: &failed,
            })
            .map_err(|e| failed.take().unwrap_or_else(|| ser::Error::custom(e)))
    }
}

/// Forwards each value a deserializer visits to `serializer`; the serializer's own error is
/// kept in `failed` while the deserializer unwinds.
struct Forward<'a, S: Serializer> {
    serializer: S,
    failed: &'a RefCell<Option<S::Error>>,
}

impl<'de, S: Serializer> Visitor<'de> for Forward<'_, S> {
    type Value = S::Ok;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<S::Ok, E> {
        keep(self.failed, self.serializer.serialize_unit())
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<S::Ok, E> {
        keep(self.failed, self.serializer.serialize_bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<S::Ok, E> {
        keep(self.failed, self.serializer.serialize_i64(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<S::Ok, E> {
        keep(self.failed, self.serializer.serialize_u64(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<S::Ok, E> {
        keep(self.failed, self.serializer.serialize_f64(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<S::Ok, E> {
        keep(self.failed, self.serializer.serialize_str(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut items: A) -> Result<S::Ok, A::Error> {
        let mut seq = keep(
            self.failed,
            self.serializer.serialize_seq(items.size_hint()),
        )?;
        while items
            .next_element_seed(Element {
                seq: &mut seq,
                failed: self.failed,
            })?
            .is_some()
        {}
        keep(self.failed, seq.end())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut entries: A) -> Result<S::Ok, A::Error> {
        let mut map = keep(
            self.failed,
            self.serializer.serialize_map(entries.size_hint()),
        )?;
        while let Some(key) = entries.next_key::<std::borrow::Cow<'de, str>>()? {
            keep(self.failed, map.serialize_key(&*key))?;
            entries.next_value_seed(Entry {
                map: &mut map,
                failed: self.failed,
            })?;
        }
        keep(self.failed, map.end())
    }
}

/// Reads one array element into a sequence being serialized.
struct Element<'a, Q: SerializeSeq> {
    seq: &'a mut Q,
    failed: &'a RefCell<Option<Q::Error>>,
}

impl<'de, Q: SerializeSeq> DeserializeSeed<'de> for Element<'_, Q> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        self.seq
            .serialize_element(&Transcode::new(deserializer))
            .map_err(|e| keep_failure(self.failed, e))
    }
}

/// Reads one object member's value into a map being serialized.
struct Entry<'a, M: SerializeMap> {
    map: &'a mut M,
    failed: &'a RefCell<Option<M::Error>>,
}

impl<'de, M: SerializeMap> DeserializeSeed<'de> for Entry<'_, M> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        self.map
            .serialize_value(&Transcode::new(deserializer))
            .map_err(|e| keep_failure(self.failed, e))
    }
}

/// `result`, its error kept for the outermost caller while the parser stops.
fn keep<T, S: ser::Error, E: de::Error>(
    failed: &RefCell<Option<S>>,
    result: Result<T, S>,
) -> Result<T, E> {
    result.map_err(|e| keep_failure(failed, e))
}

/// Keeps a serializer's error for the outermost caller and stops the parser.
fn keep_failure<S: ser::Error, E: de::Error>(failed: &RefCell<Option<S>>, error: S) -> E {
    let message = error.to_string();
    *failed.borrow_mut() = Some(error);
    E::custom(message)
}
