//! Checks a rule's self-description at load, and resolves configured parameter values
//! against it (type, bounds, unknown names) into the positional list a call takes.

use crate::model::{ParamType, ParamValue, RuleInfo};
use std::collections::{BTreeMap, HashSet};

/// Longest window a rule may declare: history memory is sized by it.
pub const MAX_WINDOW_SECS: u32 = 7 * 24 * 3600;
pub const MAX_WINDOWS: usize = 16;
pub const MAX_PARAMS: usize = 64;

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// Validates what a rule says about itself; the error names every problem found.
pub fn validate_info(info: &RuleInfo) -> Result<(), String> {
    let mut problems = Vec::new();
    if !valid_name(&info.name) {
        problems.push(format!("name {:?} must be 1..=64 of [a-z0-9-_]", info.name));
    }
    if info.version.is_empty()
        || info.version.len() > 32
        || info.version.contains(char::is_whitespace)
    {
        problems.push(format!(
            "version {:?} must be 1..=32 characters without spaces",
            info.version
        ));
    }
    if info.kinds.is_empty() {
        problems.push("declares no reading kinds".to_owned());
    }
    if info.windows.len() > MAX_WINDOWS {
        problems.push(format!(
            "declares {} windows (at most {MAX_WINDOWS})",
            info.windows.len()
        ));
    }
    let mut seen = HashSet::new();
    for w in &info.windows {
        if w.duration_secs == 0 || w.duration_secs > MAX_WINDOW_SECS {
            problems.push(format!(
                "window {:?} lasts {} s (must be 1..={MAX_WINDOW_SECS})",
                w.name, w.duration_secs
            ));
        }
        if !seen.insert(w.name.as_str()) {
            problems.push(format!("window {:?} declared twice", w.name));
        }
    }
    if info.params.len() > MAX_PARAMS {
        problems.push(format!(
            "declares {} parameters (at most {MAX_PARAMS})",
            info.params.len()
        ));
    }
    let mut seen = HashSet::new();
    for p in &info.params {
        if !valid_name(&p.name) {
            problems.push(format!(
                "parameter name {:?} must be 1..=64 of [a-z0-9-_]",
                p.name
            ));
        }
        if !seen.insert(p.name.as_str()) {
            problems.push(format!("parameter {:?} declared twice", p.name));
        }
        if let (Some(lo), Some(hi)) = (p.min, p.max)
            && lo > hi
        {
            problems.push(format!(
                "parameter {:?} has min {lo} above max {hi}",
                p.name
            ));
        }
        if let Err(e) = check_value(p.ty, p.min, p.max, p.default) {
            problems.push(format!("parameter {:?} default {}: {e}", p.name, p.default));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

fn check_value(
    ty: ParamType,
    min: Option<f64>,
    max: Option<f64>,
    v: ParamValue,
) -> Result<ParamValue, String> {
    let v = match (ty, v) {
        (ParamType::Float, ParamValue::Float(f)) if f.is_finite() => ParamValue::Float(f),
        (ParamType::Float, ParamValue::Integer(i)) => ParamValue::Float(i as f64),
        (ParamType::Integer, ParamValue::Integer(i)) => ParamValue::Integer(i),
        (ParamType::Integer, ParamValue::Float(f)) if f.fract() == 0.0 && f.abs() < 9.0e15 => {
            ParamValue::Integer(f as i64)
        }
        (ParamType::Boolean, ParamValue::Boolean(b)) => ParamValue::Boolean(b),
        (ty, v) => return Err(format!("{v} is not a {ty:?}").to_lowercase()),
    };
    if let Some(x) = v.as_f64() {
        if let Some(lo) = min
            && x < lo
        {
            return Err(format!("{x} is below the minimum {lo}"));
        }
        if let Some(hi) = max
            && x > hi
        {
            return Err(format!("{x} is above the maximum {hi}"));
        }
    }
    Ok(v)
}

/// Resolves overrides against the declaration: one value per declared parameter, in order.
pub fn resolve(
    info: &RuleInfo,
    overrides: &BTreeMap<String, ParamValue>,
) -> Result<Vec<ParamValue>, String> {
    if let Some(unknown) = overrides
        .keys()
        .find(|k| !info.params.iter().any(|p| &p.name == *k))
    {
        let known: Vec<&str> = info.params.iter().map(|p| p.name.as_str()).collect();
        return Err(format!(
            "rule {} has no parameter {unknown:?} (it has: {})",
            info.name,
            known.join(", ")
        ));
    }
    info.params
        .iter()
        .map(|p| {
            let v = overrides.get(&p.name).copied().unwrap_or(p.default);
            check_value(p.ty, p.min, p.max, v).map_err(|e| format!("parameter {:?}: {e}", p.name))
        })
        .collect()
}

/// Parses `name=value` as given on a command line; the declared type decides the parse.
pub fn parse_assignment(info: &RuleInfo, s: &str) -> Result<(String, ParamValue), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("expected name=value, got {s:?}"))?;
    let (k, v) = (k.trim(), v.trim());
    let spec = info
        .params
        .iter()
        .find(|p| p.name == k)
        .ok_or_else(|| format!("rule {} has no parameter {k:?}", info.name))?;
    let value = match spec.ty {
        ParamType::Float => v
            .parse::<f64>()
            .map(ParamValue::Float)
            .map_err(|_| format!("{k}: {v:?} is not a number"))?,
        ParamType::Integer => v
            .parse::<i64>()
            .map(ParamValue::Integer)
            .map_err(|_| format!("{k}: {v:?} is not an integer"))?,
        ParamType::Boolean => v
            .parse::<bool>()
            .map(ParamValue::Boolean)
            .map_err(|_| format!("{k}: {v:?} is not true/false"))?,
    };
    Ok((k.to_owned(), value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ParamSpec, ReadingKind, WindowSpec};

    fn info() -> RuleInfo {
        RuleInfo {
            name: "r".into(),
            version: "1.0.0".into(),
            description: String::new(),
            kinds: vec![ReadingKind::Glucose],
            windows: vec![WindowSpec {
                name: "w".into(),
                duration_secs: 600,
            }],
            params: vec![ParamSpec {
                name: "high".into(),
                description: String::new(),
                ty: ParamType::Float,
                default: ParamValue::Float(115.0),
                min: Some(40.0),
                max: Some(600.0),
            }],
        }
    }

    #[test]
    fn resolves_defaults_and_overrides() {
        let i = info();
        assert_eq!(
            resolve(&i, &BTreeMap::new()).unwrap(),
            vec![ParamValue::Float(115.0)]
        );
        let o = BTreeMap::from([("high".to_owned(), ParamValue::Integer(120))]);
        assert_eq!(resolve(&i, &o).unwrap(), vec![ParamValue::Float(120.0)]);
    }

    #[test]
    fn rejects_bad_overrides() {
        let i = info();
        let o = BTreeMap::from([("high".to_owned(), ParamValue::Float(1000.0))]);
        assert!(resolve(&i, &o).unwrap_err().contains("above the maximum"));
        let o = BTreeMap::from([("nope".to_owned(), ParamValue::Float(1.0))]);
        assert!(resolve(&i, &o).unwrap_err().contains("no parameter"));
        let o = BTreeMap::from([("high".to_owned(), ParamValue::Boolean(true))]);
        assert!(resolve(&i, &o).is_err());
        assert!(parse_assignment(&i, "high=abc").is_err());
        assert_eq!(
            parse_assignment(&i, "high = 99").unwrap().1,
            ParamValue::Float(99.0)
        );
    }

    #[test]
    fn rejects_bad_descriptions() {
        let mut i = info();
        i.windows[0].duration_secs = 0;
        i.params[0].default = ParamValue::Float(1.0);
        let e = validate_info(&i).unwrap_err();
        assert!(
            e.contains("lasts 0 s") && e.contains("below the minimum"),
            "{e}"
        );
    }
}
