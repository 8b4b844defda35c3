//! Where a tune job queues: `hyperparams.priority` and `hyperparams.device`.

use pgmld_jobs::DeviceKind;
use serde_json::{Map, Value as Json};

use crate::error::{Result, TuneError};

/// The hyperparams keys read here.
pub const KEYS: &[&str] = &["priority", "device"];

/// A job's place in the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    /// Higher runs first; first in, first out within a priority. Default `0`.
    pub priority: i32,
    /// The kind of device the job runs on. Default `any`.
    pub device: DeviceKind,
    /// The ranks the job asks for (`training_args.world_size`, read with the training
    /// arguments). Default `1`.
    pub world_size: i32,
}

impl Default for Placement {
    fn default() -> Self {
        Placement { priority: 0, device: DeviceKind::Any, world_size: 1 }
    }
}

impl Placement {
    /// Reads `priority` (a whole number) and `device` (`"any"`, `"cpu"` or `"cuda"`) from
    /// the hyperparams object.
    pub fn parse(hp: &Map<String, Json>) -> Result<Placement> {
        let mut p = Placement::default();
        match hp.get("priority") {
            None | Some(Json::Null) => {}
            Some(v) => {
                p.priority = v.as_i64().and_then(|n| i32::try_from(n).ok()).ok_or_else(|| {
                    TuneError::bad(
                        format!("hyperparams.priority must be a whole number, not {v}"),
                        "Jobs with a higher priority are claimed first; the default is 0 and negative numbers run last.",
                    )
                })?
            }
        }
        match hp.get("device") {
            None | Some(Json::Null) => {}
            Some(Json::String(s)) => p.device = DeviceKind::parse(s)?,
            Some(v) => return Err(pgmld_jobs::JobError::BadDevice(v.to_string()).into()),
        }
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Json) -> Result<Placement> {
        Placement::parse(v.as_object().unwrap())
    }

    #[test]
    fn priority_and_device_parse_and_bad_values_are_named() {
        assert_eq!(parse(json!({})).unwrap(), Placement::default());
        let p = parse(json!({"priority": -3, "device": "CUDA"})).unwrap();
        assert_eq!((p.priority, p.device), (-3, DeviceKind::Cuda));
        let e = parse(json!({"priority": 1.5})).unwrap_err();
        assert!(e.to_string().contains("1.5"), "{e}");
        let e = parse(json!({"priority": 1e12})).unwrap_err();
        assert!(matches!(e, TuneError::BadArgument { .. }), "{e}");
        let e = parse(json!({"device": "tpu"})).unwrap_err();
        assert!(e.to_string().contains("\"tpu\""), "{e}");
        assert!(matches!(e, TuneError::BadArgument { .. }));
        assert!(parse(json!({"device": 3})).is_err());
    }
}
