//! Structured payloads in reason messages (40999 navigation / interaction data, lockdown
//! device info): JSON or XML → a JSON value.
//!
//! XML maps to JSON the common way: an element becomes `{"name": content}` where content is
//! the text when the element has only text, otherwise an object with `@attribute` keys,
//! `#text` for text, and one key per child element (an array when it repeats).

use quick_xml::events::Event as Xml;
use serde_json::{Map, Value};

use crate::model::{DataFormat, JsonText};

/// Deepest XML nesting converted; deeper documents are kept as text.
const MAX_XML_DEPTH: usize = 64;

/// Parses `text` when it is a JSON object/array or an XML document.
pub fn parse(text: &str) -> Option<(DataFormat, JsonText)> {
    let trimmed = text.trim();
    match trimmed.as_bytes().first()? {
        // JSON is validated and kept as it is: no tree is built.
        b'{' | b'[' => JsonText::parse(trimmed).map(|json| (DataFormat::Json, json)),
        b'<' => xml_to_json(trimmed).map(|value| (DataFormat::Xml, JsonText::from_value(&value))),
        _ => None,
    }
}

/// One open element while converting.
struct Open {
    name: String,
    map: Map<String, Value>,
    text: String,
}

impl Open {
    fn into_value(self) -> Value {
        // Text is trimmed as a whole (not piece by piece around entity references).
        let text = self.text.trim();
        if self.map.is_empty() {
            return Value::String(text.to_owned());
        }
        let mut map = self.map;
        if !text.is_empty() {
            map.insert("#text".into(), Value::String(text.to_owned()));
        }
        Value::Object(map)
    }
}

fn add_child(map: &mut Map<String, Value>, name: String, value: Value) {
    match map.get_mut(&name) {
        None => {
            map.insert(name, value);
        }
        Some(Value::Array(items)) => items.push(value),
        Some(existing) => {
            let first = existing.take();
            *existing = Value::Array(vec![first, value]);
        }
    }
}

fn open_element(start: &quick_xml::events::BytesStart<'_>) -> Option<Open> {
    let name = start.name().as_ref().to_owned();
    let mut map = Map::new();
    for attribute in start.attributes() {
        let attribute = attribute.ok()?;
        let key = attribute.key.as_ref();
        let value = attribute.normalized_value(quick_xml::XmlVersion::Implicit1_0).ok()?;
        map.insert(format!("@{key}"), Value::String(value.into_owned()));
    }
    Some(Open { name, map, text: String::new() })
}

fn xml_to_json(text: &str) -> Option<Value> {
    let mut reader = quick_xml::Reader::from_str(text);
    let mut stack: Vec<Open> = Vec::new();
    let mut root: Option<Value> = None;
    loop {
        match reader.read_event().ok()? {
            Xml::Start(start) => {
                if stack.len() >= MAX_XML_DEPTH || root.is_some() {
                    return None;
                }
                stack.push(open_element(&start)?);
            }
            Xml::Empty(start) => {
                let element = open_element(&start)?;
                let name = element.name.clone();
                let value = element.into_value();
                match stack.last_mut() {
                    Some(parent) => add_child(&mut parent.map, name, value),
                    None if root.is_none() => root = Some(Value::Object(Map::from_iter([(name, value)]))),
                    None => return None,
                }
            }
            Xml::End(_) => {
                let element = stack.pop()?;
                let name = element.name.clone();
                let value = element.into_value();
                match stack.last_mut() {
                    Some(parent) => add_child(&mut parent.map, name, value),
                    None => root = Some(Value::Object(Map::from_iter([(name, value)]))),
                }
            }
            Xml::Text(content) => match stack.last_mut() {
                Some(open) => open.text.push_str(&content.xml10_content()),
                // Only white space may stand outside the root element.
                None if content.trim().is_empty() => {}
                None => return None,
            },
            Xml::CData(content) => stack.last_mut()?.text.push_str(&content.xml10_content()),
            Xml::GeneralRef(reference) => {
                let text = stack.last_mut()?;
                match reference.resolve_char_ref().ok()? {
                    Some(c) => text.text.push(c),
                    None => text.text.push_str(quick_xml::escape::resolve_predefined_entity(&reference)?),
                }
            }
            Xml::Eof => break,
            Xml::Decl(_) | Xml::PI(_) | Xml::Comment(_) | Xml::DocType(_) => {}
        }
    }
    if stack.is_empty() { root } else { None }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn json_payloads_parse() {
        let (format, value) = parse(r#" {"navigation":{"from":"item-1","to":"item-2"}} "#).expect("json");
        assert_eq!(format, DataFormat::Json);
        assert_eq!(value.to_value(), json!({"navigation": {"from": "item-1", "to": "item-2"}}));
        assert_eq!(parse("[1,2]").map(|p| p.1.to_value()), Some(json!([1, 2])));
    }

    #[test]
    fn xml_payloads_map_to_json() {
        let xml = r#"<?xml version="1.0"?>
            <navigation type="next" at="2026-03-01T10:15:00Z">
              <from>item-1</from><to>item-2</to>
              <interaction kind="response"/><interaction kind="focus">x &amp; y</interaction>
              <note><![CDATA[a < b]]></note>
            </navigation>"#;
        let (format, value) = parse(xml).expect("xml");
        assert_eq!(format, DataFormat::Xml);
        assert_eq!(
            value.to_value(),
            json!({"navigation": {
                "@type": "next", "@at": "2026-03-01T10:15:00Z",
                "from": "item-1", "to": "item-2",
                "interaction": [{"@kind": "response"}, {"@kind": "focus", "#text": "x & y"}],
                "note": "a < b"
            }})
        );
    }

    #[test]
    fn text_and_broken_payloads_are_not_structured() {
        for text in
            ["plain text", "", "{not json", "<open><unclosed></open>", "<a></a><b></b>", "<a>", "[1,", "<a x=\"1></a>"]
        {
            assert_eq!(parse(text), None, "{text:?}");
        }
    }

    #[test]
    fn deep_xml_is_refused_not_overflowed() {
        let deep = format!("{}{}", "<a>".repeat(10_000), "</a>".repeat(10_000));
        assert_eq!(parse(&deep), None);
    }
}
