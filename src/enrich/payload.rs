//! Structured payloads in reason messages (40999 navigation / interaction data, lockdown
//! device info): JSON or XML → JSON text.
//!
//! XML maps to JSON the common way: an element becomes `{"name": content}` where content is
//! the element's text when it has only text, otherwise an object with `@attribute` keys,
//! one key per child element name in document order (an array when the name repeats), and
//! `#text` for its own text. Text is trimmed. Only XML's predefined entities and character
//! references are resolved; a document that declares or uses others is kept as text.

use std::collections::HashMap;

use quick_xml::events::{BytesStart, Event as Xml};

use crate::model::{DataFormat, JsonText};

/// Deepest XML nesting converted; deeper documents are kept as text.
const MAX_XML_DEPTH: usize = 64;

/// Parses `text` when it is a JSON object/array or an XML document.
pub fn parse(text: &str) -> Option<(DataFormat, JsonText)> {
    let trimmed = text.trim();
    match trimmed.as_bytes().first()? {
        // JSON is validated and kept as it is: no tree is built.
        b'{' | b'[' => JsonText::parse(trimmed).map(|json| (DataFormat::Json, json)),
        b'<' => xml_to_json(trimmed).map(|json| (DataFormat::Xml, JsonText::written(json))),
        _ => None,
    }
}

/// One element of the document.
#[derive(Debug, Default)]
struct Element {
    name: String,
    attributes: Vec<(String, String)>,
    children: Vec<Element>,
    text: String,
}

impl Element {
    fn open(start: &BytesStart<'_>) -> Option<Element> {
        let name = start.name().as_ref().to_owned();
        let mut attributes = Vec::new();
        for attribute in start.attributes() {
            let attribute = attribute.ok()?;
            let value = attribute.normalized_value(quick_xml::XmlVersion::Implicit1_0).ok()?;
            attributes.push((attribute.key.as_ref().to_owned(), value.into_owned()));
        }
        Some(Element { name, attributes, children: Vec::new(), text: String::new() })
    }

    /// Writes the element's content (not its name) as JSON.
    fn write_content(&self, out: &mut Vec<u8>) {
        let text = self.text.trim();
        if self.attributes.is_empty() && self.children.is_empty() {
            write_str(out, text);
            return;
        }
        out.push(b'{');
        let mut first = true;
        let mut key = |out: &mut Vec<u8>, prefix: &str, key: &str| {
            if !std::mem::take(&mut first) {
                out.push(b',');
            }
            write_str_prefixed(out, prefix, key);
            out.push(b':');
        };
        for (name, value) in &self.attributes {
            key(out, "@", name);
            write_str(out, value);
        }
        for (name, group) in group_by_name(&self.children) {
            key(out, "", name);
            if let [only] = group.as_slice() {
                only.write_content(out);
            } else {
                out.push(b'[');
                for (at, child) in group.iter().enumerate() {
                    if at > 0 {
                        out.push(b',');
                    }
                    child.write_content(out);
                }
                out.push(b']');
            }
        }
        if !text.is_empty() {
            key(out, "", "#text");
            write_str(out, text);
        }
        out.push(b'}');
    }
}

/// Children grouped by name, in the order each name first appears; linear in the number
/// of children (a hostile payload may hold a hundred thousand).
fn group_by_name(children: &[Element]) -> Vec<(&str, Vec<&Element>)> {
    let mut groups: Vec<(&str, Vec<&Element>)> = Vec::new();
    let mut index: HashMap<&str, usize> = HashMap::new();
    for child in children {
        let at = *index.entry(&child.name).or_insert_with(|| {
            groups.push((&child.name, Vec::new()));
            groups.len() - 1
        });
        groups[at].1.push(child);
    }
    groups
}

/// A JSON string literal, escaped by serde_json (writing into a Vec cannot fail).
fn write_str(out: &mut Vec<u8>, text: &str) {
    serde_json::to_writer(&mut *out, text).expect("writing into a Vec cannot fail");
}

/// A JSON string literal of `prefix` + `text` (attribute keys are `@name`).
fn write_str_prefixed(out: &mut Vec<u8>, prefix: &str, text: &str) {
    if prefix.is_empty() {
        write_str(out, text);
    } else {
        write_str(out, &format!("{prefix}{text}"));
    }
}

fn xml_to_json(text: &str) -> Option<String> {
    let mut reader = quick_xml::Reader::from_str(text);
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    // A closed element goes to its parent, or becomes the one root.
    let close = |element: Element, stack: &mut Vec<Element>, root: &mut Option<Element>| {
        match stack.last_mut() {
            Some(parent) => parent.children.push(element),
            None if root.is_none() => *root = Some(element),
            None => return None,
        }
        Some(())
    };
    loop {
        match reader.read_event().ok()? {
            Xml::Start(start) => {
                if stack.len() >= MAX_XML_DEPTH || root.is_some() {
                    return None;
                }
                stack.push(Element::open(&start)?);
            }
            Xml::Empty(start) => {
                if root.is_some() {
                    return None;
                }
                close(Element::open(&start)?, &mut stack, &mut root)?;
            }
            Xml::End(_) => {
                let element = stack.pop()?;
                close(element, &mut stack, &mut root)?;
            }
            Xml::Text(content) => match stack.last_mut() {
                Some(open) => open.text.push_str(&content.xml10_content()),
                // Only white space may stand outside the root element.
                None if content.trim().is_empty() => {}
                None => return None,
            },
            Xml::CData(content) => stack.last_mut()?.text.push_str(&content.xml10_content()),
            Xml::GeneralRef(reference) => {
                let open = stack.last_mut()?;
                match reference.resolve_char_ref().ok()? {
                    Some(c) => open.text.push(c),
                    None => open.text.push_str(quick_xml::escape::resolve_predefined_entity(&reference)?),
                }
            }
            // A document type declaration may define entities we do not expand.
            Xml::DocType(_) => return None,
            Xml::Eof => break,
            Xml::Decl(_) | Xml::PI(_) | Xml::Comment(_) => {}
        }
    }
    let root = root.filter(|_| stack.is_empty())?;
    let mut out = Vec::with_capacity(text.len() + 16);
    out.push(b'{');
    write_str(&mut out, &root.name);
    out.push(b':');
    root.write_content(&mut out);
    out.push(b'}');
    // Valid UTF-8 by construction: every byte written came from &str or ASCII punctuation.
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn json_payloads_parse() {
        let (format, value) = parse(r#" {"navigation":{"from":"item-1","to":"item-2"}} "#).expect("json");
        assert_eq!(format, DataFormat::Json);
        assert_eq!(value.as_str(), r#"{"navigation":{"from":"item-1","to":"item-2"}}"#, "kept as sent");
        assert_eq!(parse("[1,2]").map(|p| p.1.to_value()), Some(json!([1, 2])));
    }

    #[test]
    fn xml_payloads_map_to_json_in_document_order() {
        let xml = r#"<?xml version="1.0"?>
            <navigation type="next" at="2026-03-01T10:15:00Z">
              <to>item-2</to><from>item-1</from>
              <interaction kind="response"/><interaction kind="focus">x &amp; y &#233;</interaction>
              <note><![CDATA[a < b]]></note>
              tail "text"
            </navigation>"#;
        let (format, value) = parse(xml).expect("xml");
        assert_eq!(format, DataFormat::Xml);
        assert_eq!(
            value.as_str(),
            r##"{"navigation":{"@type":"next","@at":"2026-03-01T10:15:00Z","to":"item-2","from":"item-1","interaction":[{"@kind":"response"},{"@kind":"focus","#text":"x & y é"}],"note":"a < b","#text":"tail \"text\""}}"##
        );
        assert_eq!(value.to_value()["navigation"]["interaction"][1]["#text"], "x & y é");
    }

    #[test]
    fn text_and_broken_payloads_are_not_structured() {
        for text in [
            "plain text",
            "",
            "{not json",
            "<open><unclosed></open>",
            "<a></a><b></b>",
            "<a/><b/>",
            "<a>",
            "<a x=\"1></a>",
            "text<a/>",
            "<!DOCTYPE x [<!ENTITY a \"aaaa\">]><x>&a;</x>",
            "<x>&custom;</x>",
            "[1,",
        ] {
            assert_eq!(parse(text), None, "{text:?}");
        }
    }

    #[test]
    fn wide_xml_converts_in_linear_time() {
        // 100,000 distinct children plus 100,000 repeats: grouping them pairwise (as a first
        // version did) would not finish within a test run.
        let mut xml = String::from("<r>");
        for n in 0..100_000 {
            xml.push_str(&format!("<a{n}/><b>{n}</b>"));
        }
        xml.push_str("</r>");
        let (_, json) = parse(&xml).expect("converted");
        let value = json.to_value();
        assert_eq!(value["r"]["b"].as_array().map(Vec::len), Some(100_000));
        assert_eq!(value["r"]["a99999"], "");
    }

    #[test]
    fn deep_xml_is_refused_not_overflowed() {
        let deep = format!("{}{}", "<a>".repeat(10_000), "</a>".repeat(10_000));
        assert_eq!(parse(&deep), None);
        let ok = format!("{}{}", "<a>".repeat(MAX_XML_DEPTH), "</a>".repeat(MAX_XML_DEPTH));
        assert!(parse(&ok).is_some());
    }
}
