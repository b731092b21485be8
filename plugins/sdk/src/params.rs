//! Typed, by-name access to a rule's positional parameter values.

use crate::{ParamSpec, ParamType, ParamValue};

/// The parameter values of one `evaluate` call, paired with the specs the rule
/// declared, so a rule reads `params.float("high_mg_dl")` instead of indexing.
///
/// The host sends one value per declared parameter, in declaration order,
/// already validated; [`Params::new`] checks the count and the types again so
/// a mismatch is a clear error rather than a wrong threshold.
#[derive(Debug, Clone, Copy)]
pub struct Params<'a> {
    specs: &'a [ParamSpec],
    values: &'a [ParamValue],
}

impl<'a> Params<'a> {
    /// Pair values with specs; errors when the count or a type does not match.
    pub fn new(specs: &'a [ParamSpec], values: &'a [ParamValue]) -> Result<Self, String> {
        if specs.len() != values.len() {
            return Err(format!(
                "the rule declares {} parameter(s) but the host passed {}",
                specs.len(),
                values.len()
            ));
        }
        for (spec, value) in specs.iter().zip(values) {
            if value_type(value) != spec.type_ {
                return Err(format!(
                    "parameter `{}` is declared {} but the host passed {}",
                    spec.name,
                    type_name(spec.type_),
                    type_name(value_type(value))
                ));
            }
        }
        Ok(Self { specs, values })
    }

    /// The raw value of the parameter called `name`.
    pub fn value(&self, name: &str) -> Result<&'a ParamValue, String> {
        self.specs
            .iter()
            .position(|spec| spec.name == name)
            .map(|i| &self.values[i])
            .ok_or_else(|| format!("the rule declares no parameter named `{name}`"))
    }

    /// The value of float parameter `name`.
    pub fn float(&self, name: &str) -> Result<f64, String> {
        match self.value(name)? {
            ParamValue::Float(v) => Ok(*v),
            other => Err(mismatch(name, ParamType::Float, other)),
        }
    }

    /// The value of integer parameter `name`.
    pub fn integer(&self, name: &str) -> Result<i64, String> {
        match self.value(name)? {
            ParamValue::Integer(v) => Ok(*v),
            other => Err(mismatch(name, ParamType::Integer, other)),
        }
    }

    /// The value of boolean parameter `name`.
    pub fn boolean(&self, name: &str) -> Result<bool, String> {
        match self.value(name)? {
            ParamValue::Boolean(v) => Ok(*v),
            other => Err(mismatch(name, ParamType::Boolean, other)),
        }
    }

    /// The declared specs, in declaration order.
    pub fn specs(&self) -> &'a [ParamSpec] {
        self.specs
    }

    /// The values, in declaration order.
    pub fn values(&self) -> &'a [ParamValue] {
        self.values
    }
}

/// The type of a parameter value.
pub(crate) fn value_type(value: &ParamValue) -> ParamType {
    match value {
        ParamValue::Float(_) => ParamType::Float,
        ParamValue::Integer(_) => ParamType::Integer,
        ParamValue::Boolean(_) => ParamType::Boolean,
    }
}

/// The WIT spelling of a parameter type, for messages.
pub(crate) fn type_name(ty: ParamType) -> &'static str {
    match ty {
        ParamType::Float => "float",
        ParamType::Integer => "integer",
        ParamType::Boolean => "boolean",
    }
}

fn mismatch(name: &str, wanted: ParamType, got: &ParamValue) -> String {
    format!(
        "parameter `{name}` is {}, not {}",
        type_name(value_type(got)),
        type_name(wanted)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn specs() -> Vec<ParamSpec> {
        vec![
            ParamSpec::float("high", "high threshold", 115.0).bounds(40.0, 600.0),
            ParamSpec::integer("gap", "max gap", 15),
            ParamSpec::boolean("on", "enabled", true),
        ]
    }

    #[test]
    fn reads_by_name_and_type() {
        let specs = specs();
        let values = [
            ParamValue::Float(120.0),
            ParamValue::Integer(3),
            ParamValue::Boolean(false),
        ];
        let params = Params::new(&specs, &values).unwrap();
        assert_eq!(params.float("high"), Ok(120.0));
        assert_eq!(params.integer("gap"), Ok(3));
        assert_eq!(params.boolean("on"), Ok(false));
    }

    #[test]
    fn wrong_type_unknown_name_and_wrong_count_are_errors() {
        let specs = specs();
        let values = [
            ParamValue::Float(120.0),
            ParamValue::Integer(3),
            ParamValue::Boolean(false),
        ];
        let params = Params::new(&specs, &values).unwrap();
        assert_eq!(
            params.integer("high"),
            Err("parameter `high` is float, not integer".into())
        );
        assert!(
            params
                .float("missing")
                .unwrap_err()
                .contains("no parameter named `missing`")
        );
        assert!(Params::new(&specs, &values[..2]).is_err());
        let swapped = [
            ParamValue::Integer(1),
            ParamValue::Integer(3),
            ParamValue::Boolean(false),
        ];
        assert!(
            Params::new(&specs, &swapped)
                .unwrap_err()
                .contains("declared float")
        );
    }
}
