//! A namespace's JSON Schema: compiled once per check, each violation
//! reported with the JSON pointer of the value that broke it.

use serde_json::Value;

use crate::error::{echo, Error};

/// At most this many violations are reported (the rest are counted).
const MAX_REPORTED: usize = 20;

/// The schema in `text`, if it is a valid JSON Schema (else 422 `invalid_schema`).
pub fn compile(schema: &Value) -> Result<jsonschema::Validator, Error> {
    jsonschema::validator_for(schema).map_err(|e| Error::InvalidSchema(echo(&e.to_string())))
}

/// Checks `content` against the schema stored as `schema_text`: 422
/// `schema_violation` naming the pointer of each violation.
pub fn check(schema_text: &str, content: &Value) -> Result<(), Error> {
    let schema: Value = serde_json::from_str(schema_text)
        .map_err(|e| Error::InvalidSchema(format!("the stored schema is not JSON: {e}")))?;
    let validator = compile(&schema)?;
    let mut violations = Vec::new();
    let mut total = 0usize;
    for error in validator.iter_errors(content) {
        total += 1;
        if violations.len() < MAX_REPORTED {
            let pointer = error.instance_path().to_string();
            violations.push((pointer, echo(&error.to_string())));
        }
    }
    if total == 0 {
        Ok(())
    } else {
        Err(Error::SchemaViolation { violations, total })
    }
}
