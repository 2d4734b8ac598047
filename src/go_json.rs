//! config.json read as runc reads it — or refused where runc would read something else.
//!
//! runc decodes with Go's encoding/json: a key names a struct field when it equals the
//! field's name after case folding (Go folds each rune as `upper(lower(r))`, so U+212A
//! KELVIN SIGN is `k`, U+017F LONG S is `s`, U+0131 and U+0130 are `i`), and when two keys
//! name one field the last wins. serde_json keeps one of two equal keys and matches exactly.
//! So `{"source": "/checked", "Source": "/host"}` would have the tool check one path while
//! runc mounts the other. [`parse`] builds the `serde_json::Value` in one pass and refuses,
//! as it goes, any object holding a key twice, and any key of an OCI struct that is not
//! spelled as the field Go would put it in. Maps (`annotations`, `linux.sysctl`...) are read
//! by Go with exact keys: only their duplicates are refused. `linux.resources`, which the tool
//! never reads and passes on in order, is runc's alone: only its duplicates are refused.

use std::cell::RefCell;
use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// What Go decodes an object or array into.
pub enum Shape {
    /// Nothing the tool or runc reads by name: only exact duplicate keys are refused.
    Any,
    /// A Go struct: its JSON field names, and the shape of each field.
    Struct(&'static [(&'static str, &'static Shape)]),
    /// A Go map with string keys (exact).
    Map(&'static Shape),
    Array(&'static Shape),
}

use Shape::{Any, Array, Map as M, Struct};

/// Why a document is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Ambiguity {
    #[error("key {at}{key:?} appears twice: runc would read only the last one")]
    Duplicate { at: String, key: String },
    #[error(
        "key {at}{key:?} is not spelled as the OCI field {field:?}: runc would read it as {at}{field}"
    )]
    Misspelled {
        at: String,
        key: String,
        field: &'static str,
    },
}

/// Parses `bytes` as a document of `shape`. Errors are an [`Ambiguity`] (downcast to tell)
/// or serde_json's syntax error.
pub fn parse(bytes: &[u8], shape: &'static Shape) -> anyhow::Result<Value> {
    let found = RefCell::new(None);
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let seed = Node {
        shape,
        at: &Trail::Root,
        found: &found,
    };
    let parsed = seed.deserialize(&mut de).and_then(|v| de.end().map(|()| v));
    match (parsed, found.into_inner()) {
        (Ok(v), _) => Ok(v),
        (Err(_), Some(ambiguity)) => Err(ambiguity.into()),
        (Err(e), None) => Err(e.into()),
    }
}

/// Where a value sits, rendered only when something is refused.
enum Trail<'a> {
    Root,
    Key(&'a Trail<'a>, &'a str),
    Index(&'a Trail<'a>, usize),
}

impl fmt::Display for Trail<'_> {
    /// The path of the value, ending with `.` when it is an object's, for a key to follow.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Trail::Root => Ok(()),
            Trail::Key(up, key) => write!(f, "{up}{key}."),
            Trail::Index(up, i) => {
                let up = up.to_string();
                write!(f, "{}[{i}].", up.strip_suffix('.').unwrap_or(&up))
            }
        }
    }
}

struct Node<'a> {
    shape: &'static Shape,
    at: &'a Trail<'a>,
    found: &'a RefCell<Option<Ambiguity>>,
}

impl<'de> DeserializeSeed<'de> for Node<'_> {
    type Value = Value;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl Node<'_> {
    fn refuse<E: de::Error>(&self, ambiguity: Ambiguity) -> E {
        let msg = ambiguity.to_string();
        *self.found.borrow_mut() = Some(ambiguity);
        E::custom(msg)
    }

    /// The shape of the value under `key`, or the refusal of `key` in this object.
    fn field(&self, key: &str) -> Result<&'static Shape, Ambiguity> {
        match self.shape {
            Struct(fields) => {
                if let Some((_, shape)) = fields.iter().find(|(f, _)| *f == key) {
                    return Ok(shape);
                }
                match fields.iter().find(|(f, _)| go_folds_to(key, f)) {
                    Some((field, _)) => Err(Ambiguity::Misspelled {
                        at: self.at.to_string(),
                        key: key.into(),
                        field,
                    }),
                    None => Ok(&Any),
                }
            }
            M(values) => Ok(values),
            Any | Array(_) => Ok(&Any),
        }
    }
}

impl<'de> Visitor<'de> for Node<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.into()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let items = match self.shape {
            Array(items) => *items,
            _ => &Any,
        };
        let mut out = Vec::new();
        loop {
            let at = Trail::Index(self.at, out.len());
            let node = Node {
                shape: items,
                at: &at,
                found: self.found,
            };
            match seq.next_element_seed(node)? {
                Some(v) => out.push(v),
                None => return Ok(Value::Array(out)),
            }
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
        let mut map = Map::new();
        while let Some(key) = access.next_key::<String>()? {
            let shape = self.field(&key).map_err(|a| self.refuse(a))?;
            let at = Trail::Key(self.at, &key);
            let value = access.next_value_seed(Node {
                shape,
                at: &at,
                found: self.found,
            })?;
            // One hash per key, as serde_json's own reading: a key seen before is refused.
            if let Some(key) = insert(&mut map, key, value) {
                return Err(self.refuse(Ambiguity::Duplicate {
                    at: self.at.to_string(),
                    key,
                }));
            }
        }
        Ok(Value::Object(map))
    }
}

/// Inserts `key`, unless it is there already: then gives it back.
fn insert(map: &mut Map<String, Value>, key: String, value: Value) -> Option<String> {
    match map.entry(key) {
        serde_json::map::Entry::Vacant(slot) => {
            slot.insert(value);
            None
        }
        serde_json::map::Entry::Occupied(slot) => Some(slot.key().clone()),
    }
}

/// Whether Go's encoding/json would put `key` in the field named `field` (ASCII, as every
/// OCI field name is).
pub fn go_folds_to(key: &str, field: &str) -> bool {
    let mut field = field.bytes();
    for c in key.chars() {
        match (fold(c), field.next()) {
            (Some(a), Some(b)) if a == b.to_ascii_uppercase() => {}
            _ => return false,
        }
    }
    field.next().is_none()
}

/// `upper(lower(c))` as Go computes it, when that is ASCII: the four non-ASCII runes that fold
/// onto ASCII letters, and ASCII itself.
fn fold(c: char) -> Option<u8> {
    match c {
        '\u{212A}' => Some(b'K'),
        '\u{017F}' => Some(b'S'),
        '\u{0131}' | '\u{0130}' => Some(b'I'),
        c if c.is_ascii() => Some(c.to_ascii_uppercase() as u8),
        _ => None,
    }
}

// The OCI runtime spec's Go types (opencontainers/runtime-spec specs-go), as JSON names.
// Leaves are `Any`; so are the other platforms' sections, which runc never looks into.

static STRINGS: Shape = Array(&Any);
static ID_MAPPINGS: Shape = Array(&Struct(&[
    ("containerID", &Any),
    ("hostID", &Any),
    ("size", &Any),
]));
static MOUNT: Shape = Struct(&[
    ("destination", &Any),
    ("type", &Any),
    ("source", &Any),
    ("options", &STRINGS),
    ("uidMappings", &ID_MAPPINGS),
    ("gidMappings", &ID_MAPPINGS),
]);
static HOOKS: Shape = {
    static HOOK: Shape = Array(&Struct(&[
        ("path", &Any),
        ("args", &STRINGS),
        ("env", &STRINGS),
        ("timeout", &Any),
    ]));
    Struct(&[
        ("prestart", &HOOK),
        ("createRuntime", &HOOK),
        ("createContainer", &HOOK),
        ("startContainer", &HOOK),
        ("poststart", &HOOK),
        ("poststop", &HOOK),
    ])
};
static PROCESS: Shape = Struct(&[
    ("terminal", &Any),
    ("consoleSize", &Struct(&[("height", &Any), ("width", &Any)])),
    (
        "user",
        &Struct(&[
            ("uid", &Any),
            ("gid", &Any),
            ("umask", &Any),
            ("additionalGids", &STRINGS),
            ("username", &Any),
        ]),
    ),
    ("args", &STRINGS),
    ("commandLine", &Any),
    ("env", &STRINGS),
    ("cwd", &Any),
    (
        "capabilities",
        &Struct(&[
            ("bounding", &STRINGS),
            ("effective", &STRINGS),
            ("inheritable", &STRINGS),
            ("permitted", &STRINGS),
            ("ambient", &STRINGS),
        ]),
    ),
    (
        "rlimits",
        &Array(&Struct(&[("type", &Any), ("hard", &Any), ("soft", &Any)])),
    ),
    ("noNewPrivileges", &Any),
    ("apparmorProfile", &Any),
    ("oomScoreAdj", &Any),
    (
        "scheduler",
        &Struct(&[
            ("policy", &Any),
            ("nice", &Any),
            ("priority", &Any),
            ("flags", &STRINGS),
            ("runtime", &Any),
            ("deadline", &Any),
            ("period", &Any),
        ]),
    ),
    ("selinuxLabel", &Any),
    (
        "ioPriority",
        &Struct(&[("class", &Any), ("priority", &Any)]),
    ),
    (
        "execCPUAffinity",
        &Struct(&[("initial", &Any), ("final", &Any)]),
    ),
]);
static SECCOMP: Shape = Struct(&[
    ("defaultAction", &Any),
    ("defaultErrnoRet", &Any),
    ("architectures", &STRINGS),
    ("flags", &STRINGS),
    ("listenerPath", &Any),
    ("listenerMetadata", &Any),
    (
        "syscalls",
        &Array(&Struct(&[
            ("names", &STRINGS),
            ("action", &Any),
            ("errnoRet", &Any),
            (
                "args",
                &Array(&Struct(&[
                    ("index", &Any),
                    ("value", &Any),
                    ("valueTwo", &Any),
                    ("op", &Any),
                ])),
            ),
        ])),
    ),
]);
static LINUX: Shape = Struct(&[
    ("uidMappings", &ID_MAPPINGS),
    ("gidMappings", &ID_MAPPINGS),
    ("sysctl", &M(&Any)),
    // Never read by the tool, and passed on in its order: runc alone reads it, so a key Go
    // folds onto a field (runc's own update.bats writes `"CPU"`) cannot make the tool and
    // runc disagree. Exact duplicates are still refused (serde_json keeps one of them).
    ("resources", &Any),
    ("cgroupsPath", &Any),
    (
        "namespaces",
        &Array(&Struct(&[("type", &Any), ("path", &Any)])),
    ),
    (
        "devices",
        &Array(&Struct(&[
            ("path", &Any),
            ("type", &Any),
            ("major", &Any),
            ("minor", &Any),
            ("fileMode", &Any),
            ("uid", &Any),
            ("gid", &Any),
        ])),
    ),
    ("netDevices", &M(&Struct(&[("name", &Any)]))),
    ("seccomp", &SECCOMP),
    ("rootfsPropagation", &Any),
    ("maskedPaths", &STRINGS),
    ("readonlyPaths", &STRINGS),
    ("mountLabel", &Any),
    (
        "intelRdt",
        &Struct(&[
            ("closID", &Any),
            ("schemata", &STRINGS),
            ("l3CacheSchema", &Any),
            ("memBwSchema", &Any),
            ("enableMonitoring", &Any),
        ]),
    ),
    (
        "memoryPolicy",
        &Struct(&[("mode", &Any), ("nodes", &Any), ("flags", &STRINGS)]),
    ),
    (
        "personality",
        &Struct(&[("domain", &Any), ("flags", &STRINGS)]),
    ),
    (
        "timeOffsets",
        &M(&Struct(&[("secs", &Any), ("nanosecs", &Any)])),
    ),
]);

/// A runtime config.json (`specs.Spec`).
pub static CONFIG: Shape = Struct(&[
    ("ociVersion", &Any),
    ("process", &PROCESS),
    ("root", &Struct(&[("path", &Any), ("readonly", &Any)])),
    ("hostname", &Any),
    ("domainname", &Any),
    ("mounts", &Array(&MOUNT)),
    ("hooks", &HOOKS),
    ("annotations", &M(&Any)),
    ("linux", &LINUX),
    ("solaris", &Any),
    ("windows", &Any),
    ("vm", &Any),
    ("zos", &Any),
    ("freebsd", &Any),
]);

/// The OCI state a hook reads on stdin (`specs.State`).
pub static STATE: Shape = Struct(&[
    ("ociVersion", &Any),
    ("id", &Any),
    ("status", &Any),
    ("pid", &Any),
    ("bundle", &Any),
    ("annotations", &M(&Any)),
]);

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(doc: &str) -> String {
        let err = parse(doc.as_bytes(), &CONFIG).unwrap_err();
        assert!(err.downcast_ref::<Ambiguity>().is_some(), "{err:#}");
        err.to_string()
    }

    #[test]
    fn a_document_runc_reads_alike_is_the_value_serde_json_builds() {
        let doc = r#"{"ociVersion":"1.0.2","process":{"user":{"uid":1,"gid":2},"args":["sh"]},
            "mounts":[{"destination":"/d","source":"/s","options":["rbind"],"x-Source":1}],
            "annotations":{"a":"1","A":"2"},"linux":{"sysctl":{"net.x":"1","NET.X":"2"},
            "resources":{"unified":{"memory.max":"1"}},"netDevices":{"eth0":{"name":"e"}}},
            "n":[1.5,-3,18446744073709551615,null,true],"x":{"y":{"Y":{}}}}"#;
        let ours = parse(doc.as_bytes(), &CONFIG).unwrap();
        let theirs: Value = serde_json::from_str(doc).unwrap();
        assert_eq!(ours, theirs);
        assert_eq!(
            serde_json::to_string(&ours).unwrap(),
            serde_json::to_string(&theirs).unwrap(),
            "same key order"
        );
    }

    #[test]
    fn a_key_given_twice_is_refused_wherever_it_is() {
        let e = refusal(r#"{"mounts":[{"source":"/a","destination":"/d","source":"/b"}]}"#);
        assert_eq!(
            e,
            r#"key mounts[0]."source" appears twice: runc would read only the last one"#
        );
        refusal(r#"{"annotations":{"k":"1","k":"2"}}"#);
        refusal(r#"{"x-unknown":{"k":1,"k":2}}"#);
        refusal(r#"{"hostname":"a","hostname":"b"}"#);
    }

    #[test]
    fn each_spelling_go_folds_onto_a_field_is_refused() {
        let cases = [
            (
                r#"{"mounts":[{"source":"/c","Source":"/h"}]}"#,
                "Source",
                "source",
            ),
            (r#"{"mounts":[{"Source":"/h"}]}"#, "Source", "source"),
            (r#"{"Mounts":[]}"#, "Mounts", "mounts"),
            (r#"{"MOUNTS":[]}"#, "MOUNTS", "mounts"),
            // U+017F LONG S folds to 's', U+212A KELVIN SIGN to 'k'.
            (
                "{\"mounts\":[{\"\u{17f}ource\":\"/h\"}]}",
                "\u{17f}ource",
                "source",
            ),
            ("{\"hoo\u{212a}s\":{}}", "hoo\u{212a}s", "hooks"),
            // U+0131 dotless i and U+0130 dotted capital I fold to 'i'.
            ("{\"l\u{131}nux\":{}}", "l\u{131}nux", "linux"),
            ("{\"l\u{130}nux\":{}}", "l\u{130}nux", "linux"),
            (r#"{"root":{"PATH":"/"}}"#, "PATH", "path"),
            (r#"{"process":{"user":{"UID":0}}}"#, "UID", "uid"),
            (
                r#"{"linux":{"uidmappings":[]}}"#,
                "uidmappings",
                "uidMappings",
            ),
            (
                r#"{"linux":{"uidMappings":[{"hostid":0}]}}"#,
                "hostid",
                "hostID",
            ),
            (
                r#"{"linux":{"netDevices":{"e":{"Name":"x"}}}}"#,
                "Name",
                "name",
            ),
            // Escapes are decoded before matching, by Go and here.
            (r#"{"mounts":[{"\u0053ource":"/h"}]}"#, "Source", "source"),
        ];
        for (doc, key, field) in cases {
            let e = refusal(doc);
            assert!(
                e.contains(&format!(
                    "{key:?} is not spelled as the OCI field {field:?}"
                )),
                "{doc}: {e}"
            );
        }
        let e = refusal(r#"{"mounts":[{"source":"/c","Source":"/h"}]}"#);
        assert_eq!(
            e,
            r#"key mounts[0]."Source" is not spelled as the OCI field "source": runc would read it as mounts[0].source"#
        );
    }

    /// runc 1.3.6's update.bats runs a container whose config.json has
    /// `linux.resources."CPU"`; the tool never reads resources, so the key is left for runc
    /// (refused before). A key given twice there is still refused.
    #[test]
    fn resources_are_runcs_alone_but_duplicates_still_refused() {
        let doc = r#"{"linux":{"resources":{"CPU":{"cpus":"0"},"Memory":{"limit":1}}}}"#;
        let ours = parse(doc.as_bytes(), &CONFIG).unwrap();
        assert_eq!(serde_json::to_string(&ours).unwrap(), doc);
        refusal(r#"{"linux":{"resources":{"cpu":{"cpus":"0"},"cpu":{"cpus":"1"}}}}"#);
        let e = refusal(r#"{"linux":{"Resources":{}}}"#);
        assert!(e.contains("\"Resources\" is not spelled"), "{e}");
    }

    #[test]
    fn what_go_does_not_fold_is_left_alone() {
        // Other look-alikes (U+1E9E, fullwidth s, "ss") do not fold onto ASCII in Go.
        for key in [
            "\u{1e9e}ource",
            "\u{ff53}ource",
            "ssource",
            "sourc",
            "sources",
        ] {
            let doc = format!("{{\"mounts\":[{{\"{key}\":\"/h\"}}]}}");
            parse(doc.as_bytes(), &CONFIG).unwrap();
        }
        assert!(go_folds_to("\u{212a}\u{17f}\u{131}", "ksi"));
        assert!(!go_folds_to("s", "source"));
    }

    #[test]
    fn state_documents_are_read_alike() {
        parse(
            br#"{"id":"c","bundle":"/b","annotations":{"a":"1"}}"#,
            &STATE,
        )
        .unwrap();
        assert!(parse(br#"{"id":"c","bundle":"/b","Bundle":"/x"}"#, &STATE).is_err());
    }

    #[test]
    fn syntax_errors_stay_serde_jsons() {
        let err = parse(b"{\"a\":", &CONFIG).unwrap_err();
        assert!(err.downcast_ref::<Ambiguity>().is_none());
        assert!(parse(b"{} x", &CONFIG).is_err(), "trailing bytes");
        let deep = "[".repeat(10_000) + &"]".repeat(10_000);
        assert!(
            parse(deep.as_bytes(), &CONFIG).is_err(),
            "depth stays bounded"
        );
    }
}
