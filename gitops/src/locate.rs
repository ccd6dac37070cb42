//! Where a field is in a YAML text: the line and column of `apis[2].resources[0].path`.
//!
//! serde_yaml knows where every node is while it parses, but tells only when something
//! fails. So a field is located by parsing the text once more with a visitor that walks
//! down the field's path and fails on arriving: serde_yaml then attaches the position
//! of that node. Should the path not be there (a field left to its default), the
//! deepest node on the way is located instead. The same parser reads the file and
//! locates in it, so the two always agree on what is where.

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// One step of a field path.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Key(String),
    Index(usize),
}

/// `apis[2].resources[0].path` as steps.
fn steps(path: &str) -> Vec<Step> {
    let mut out = Vec::new();
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let mut rest = part;
        if let Some(open) = rest.find('[') {
            let key = &rest[..open];
            if !key.is_empty() {
                out.push(Step::Key(key.to_string()));
            }
            rest = &rest[open..];
            while let Some(inner) = rest.strip_prefix('[') {
                let Some(close) = inner.find(']') else { break };
                if let Ok(i) = inner[..close].parse() {
                    out.push(Step::Index(i));
                }
                rest = &inner[close + 1..];
            }
        } else {
            out.push(Step::Key(rest.to_string()));
        }
    }
    out
}

/// The marker the visitor fails with on arrival.
const HERE: &str = "\u{0}here";

struct Locate<'a>(&'a [Step]);

impl<'de> DeserializeSeed<'de> for Locate<'_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

/// A map key of any scalar kind, as text.
struct Key(String);

impl<'de> de::Deserialize<'de> for Key {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Key, D::Error> {
        let value = serde_yaml::Value::deserialize(d)?;
        Ok(Key(match value {
            serde_yaml::Value::String(s) => s,
            other => serde_yaml::to_string(&other)
                .unwrap_or_default()
                .trim()
                .to_string(),
        }))
    }
}

impl<'de> Visitor<'de> for Locate<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any YAML")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        if let Some((Step::Key(wanted), rest)) = self.0.split_first() {
            while let Some(Key(key)) = map.next_key::<Key>()? {
                if key == *wanted {
                    return map.next_value_seed(Locate(rest));
                }
                map.next_value::<IgnoredAny>()?;
            }
        }
        Err(de::Error::custom(HERE))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        if let Some((Step::Index(wanted), rest)) = self.0.split_first() {
            let mut i = 0;
            while i < *wanted {
                if seq.next_element::<IgnoredAny>()?.is_none() {
                    return Err(de::Error::custom(HERE));
                }
                i += 1;
            }
            if seq.next_element_seed(Locate(rest))?.is_some() {
                return Ok(());
            }
        }
        Err(de::Error::custom(HERE))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Err(E::custom(HERE))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Err(E::custom(HERE))
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Err(E::custom(HERE))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Err(E::custom(HERE))
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Err(E::custom(HERE))
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Err(E::custom(HERE))
    }
}

/// The (line, column) of `path` in `text` (both from 1), or of the deepest node on its
/// way; `None` if the text does not parse.
pub(crate) fn locate(text: &str, path: &str) -> Option<(usize, usize)> {
    let steps = steps(path);
    let de = serde_yaml::Deserializer::from_str(text);
    match Locate(&steps).deserialize(de) {
        Err(e) if e.to_string().contains(HERE) => e.location().map(|l| (l.line(), l.column())),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "format: gatehouse/v1\napis:\n  - context: /a\n    version: '1'\n    resources:\n      - method: GET\n        path: /x\n      - method: GET\n        path: /y\n";

    #[test]
    fn fields_are_found_at_their_line() {
        assert_eq!(locate(TEXT, "format").map(|l| l.0), Some(1));
        assert_eq!(locate(TEXT, "apis[0].version").map(|l| l.0), Some(4));
        assert_eq!(locate(TEXT, "apis[0].resources[1].path"), Some((9, 15)));
        assert_eq!(locate(TEXT, "apis[0].resources[1]").map(|l| l.0), Some(8));
    }

    #[test]
    fn a_missing_field_is_found_at_its_object() {
        assert_eq!(
            locate(TEXT, "apis[0].resources[0].scopes").map(|l| l.0),
            Some(6)
        );
        assert_eq!(locate(TEXT, "apis[3]").map(|l| l.0), Some(3));
        assert_eq!(locate("@", "a"), None);
    }

    #[test]
    fn paths_split_into_steps() {
        assert_eq!(
            steps("apis[2].resources[0].path"),
            vec![
                Step::Key("apis".into()),
                Step::Index(2),
                Step::Key("resources".into()),
                Step::Index(0),
                Step::Key("path".into())
            ]
        );
    }
}
