//! The GlucoGuard rule SDK: bindings for `glucoguard:rules@1.0.0`, the [`Rule`] trait, [`export_rule!`], logging and native test helpers.
//!
//! A rule is a unit type implementing [`Rule`]; its logic should be a plain
//! function that unit tests call natively. Three lines export it:
//!
//! ```
//! use glucoguard_sdk::{
//!     export_rule, Alert, ParamSpec, Params, Reading, ReadingKind, Rule, RuleInfo, Severity, Windows,
//! };
//!
//! pub struct MyRule;
//!
//! impl Rule for MyRule {
//!     fn describe() -> RuleInfo {
//!         RuleInfo {
//!             name: "above-threshold".into(),
//!             version: "1.0.0".into(),
//!             description: "Alerts when a reading is above high_mg_dl".into(),
//!             kinds: vec![ReadingKind::Glucose],
//!             windows: vec![],
//!             params: vec![ParamSpec::float("high_mg_dl", "Alert above this (mg/dL)", 180.0).bounds(40.0, 600.0)],
//!         }
//!     }
//!     fn evaluate(params: &Params, batch: &[Reading], _windows: &Windows) -> Result<Vec<Alert>, String> {
//!         let high = params.float("high_mg_dl")?;
//!         Ok(batch
//!             .iter()
//!             .enumerate()
//!             .filter(|(_, r)| r.glucose().is_some_and(|v| v > high))
//!             .map(|(i, _)| Alert::new(i, "high", Severity::Warning, "above the threshold"))
//!             .collect())
//!     }
//! }
//!
//! export_rule!(MyRule);
//!
//! // Natively, the same rule runs through the SDK's test helpers with the host's semantics.
//! let alerts = glucoguard_sdk::testing::evaluate_series::<MyRule>(&[], &[(1, 0, 150.0), (1, 300_000, 200.0)]).unwrap();
//! assert_eq!(alerts.len(), 1);
//! assert_eq!(alerts[0].index, 1);
//! ```
//!
//! The export only exists when compiling for `wasm32`, so a rule crate with
//! `crate-type = ["cdylib", "rlib"]` also builds, tests and links natively
//! (the host uses that for its equivalence test and benchmark).

mod helpers;
mod params;
pub mod testing;
mod windows;

/// Bindings generated from `wit/rules.wit` (world `rule-plugin`).
///
/// Rule authors should not need this module: the types are re-exported at the
/// crate root and [`export_rule!`] does the exporting.
#[allow(unsafe_code, missing_docs, clippy::all)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "rule-plugin",
        pub_export_macro: true,
        export_macro_name: "__export_rule_plugin",
        default_bindings_module: "glucoguard_sdk::bindings",
        additional_derives: [PartialEq],
    });
}

pub use bindings::glucoguard::rules::host::LogLevel;
pub use bindings::glucoguard::rules::types::{
    Alert, Connectivity, DeviceStatus, Measurement, ParamSpec, ParamType, ParamValue,
    PreviousReading, Reading, ReadingKind, RuleInfo, Severity, WindowSpec, WindowStats,
};
pub use params::Params;
pub use windows::Windows;

/// A GlucoGuard alert rule: a pure function of its parameters, a batch of
/// readings and the window aggregates the host computed for them.
///
/// No clock, no filesystem, no network and no state kept between calls; the
/// host supplies the history (`previous`, window stats) with every reading.
pub trait Rule {
    /// What the rule is: name, version, reading kinds, windows and parameters.
    /// Must depend on nothing but the code (the host reads it once at load).
    fn describe() -> RuleInfo;

    /// Evaluate one batch. Alerts point back at readings by their index in
    /// `batch`. An `Err` is a fault of the rule, which the host counts like a trap.
    fn evaluate(
        params: &Params<'_>,
        batch: &[Reading],
        windows: &Windows<'_>,
    ) -> Result<Vec<Alert>, String>;
}

/// Write a log line through the host (rate-limited and attributed to the rule
/// there). Natively, for tests, it goes to stderr.
///
/// Patient data belongs at `Debug` level only.
pub fn log(level: LogLevel, message: &str) {
    #[cfg(target_arch = "wasm32")]
    bindings::glucoguard::rules::host::log(level, message);
    #[cfg(not(target_arch = "wasm32"))]
    eprintln!("[rule {}] {message}", helpers::level_name(level));
}

/// Export a type implementing [`Rule`] as the component's `rule` interface.
///
/// Expands to nothing but a trait-bound check when not compiling for
/// `wasm32`, so native builds and tests of the rule crate link.
#[macro_export]
macro_rules! export_rule {
    ($rule:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            struct __GlucoguardRuleExport;

            static __GLUCOGUARD_RULE_INFO: ::std::sync::OnceLock<$crate::RuleInfo> =
                ::std::sync::OnceLock::new();

            impl $crate::bindings::exports::glucoguard::rules::rule::Guest for __GlucoguardRuleExport {
                fn describe() -> $crate::RuleInfo {
                    <$rule as $crate::Rule>::describe()
                }

                fn evaluate(
                    params: ::std::vec::Vec<$crate::ParamValue>,
                    batch: ::std::vec::Vec<$crate::Reading>,
                    windows: ::std::vec::Vec<$crate::WindowStats>,
                ) -> ::std::result::Result<::std::vec::Vec<$crate::Alert>, ::std::string::String> {
                    let info = __GLUCOGUARD_RULE_INFO.get_or_init(<$rule as $crate::Rule>::describe);
                    $crate::__private::evaluate::<$rule>(info, &params, &batch, &windows)
                }
            }

            $crate::__export_rule_plugin_impl!(__GlucoguardRuleExport with_types_in $crate::bindings);
        };

        #[cfg(not(target_arch = "wasm32"))]
        const _: () = {
            fn __glucoguard_assert_rule<R: $crate::Rule>() {}
            let _ = __glucoguard_assert_rule::<$rule>;
        };
    };
}

#[doc(hidden)]
pub mod __private {
    use crate::{Alert, ParamValue, Params, Reading, Rule, RuleInfo, WindowStats, Windows};

    /// The glue between the flat WIT call and [`Rule::evaluate`]; shared by
    /// the export and by [`crate::testing`] so both see the same wrapping.
    pub fn evaluate<R: Rule>(
        info: &RuleInfo,
        params: &[ParamValue],
        batch: &[Reading],
        windows: &[WindowStats],
    ) -> Result<Vec<Alert>, String> {
        let params = Params::new(&info.params, params)?;
        let windows = Windows::new(windows, info.windows.len(), batch.len())?;
        R::evaluate(&params, batch, &windows)
    }
}
