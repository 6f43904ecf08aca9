//! A CrashTable as the operator receives it: any JSON the API server might hand over (the schema
//! and CEL rules are the API server's; this is what slips past them), then every pure builder of
//! the reconcile. None may panic on any spec.
#![no_main]

use crashfleet_operator::builders;
use crashfleet_operator::crd::CrashTable;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(mut ct) = serde_json::from_slice::<CrashTable>(data) else {
        return;
    };
    // The API server always sets these; the builders may rely on them.
    if ct.metadata.name.is_none() {
        ct.metadata.name = Some("t".into());
    }
    if ct.metadata.namespace.is_none() {
        ct.metadata.namespace = Some("ns".into());
    }
    if ct.metadata.uid.is_none() {
        ct.metadata.uid = Some("00000000-0000-0000-0000-000000000000".into());
    }
    let _ = builders::service_account(&ct);
    let _ = builders::role(&ct);
    let _ = builders::role_binding(&ct);
    let _ = builders::fairness_secret_object(&ct, "00");
    let _ = builders::auth_secret_object(&ct, "jwt", "admin");
    let _ = builders::game_env(&ct);
    let _ = builders::deployment(&ct);
    let _ = builders::service(&ct);
    let _ = builders::pod_disruption_budget(&ct);
    let _ = builders::ingress(&ct);
    let _ = builders::autoscaler(&ct);
    let _ = builders::service_monitor(&ct);
});
