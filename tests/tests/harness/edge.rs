//! The edge harness itself: the Gateway API's standard CRDs install from the pinned module and
//! the API server serves them; Traefik, started off-cluster with the test kubeconfig, takes a
//! GatewayClass of its controller name and programs a Gateway on its own entry point.

use std::time::Duration;

use anyhow::Context as _;
use crashfleet_tests::k8s::{
    Traefik, apply_traefik_gateway, cluster_or_skip, install_gateway_api, poll,
};
use kube::api::{Api, DynamicObject};
use kube::core::ApiResource;

fn gateway_api(kind: &str, plural: &str) -> ApiResource {
    ApiResource {
        group: "gateway.networking.k8s.io".into(),
        version: "v1".into(),
        api_version: "gateway.networking.k8s.io/v1".into(),
        kind: kind.into(),
        plural: plural.into(),
    }
}

/// The condition `type_` of an object's `status.conditions` is True.
fn condition_true(obj: &DynamicObject, type_: &str) -> bool {
    obj.data["status"]["conditions"]
        .as_array()
        .is_some_and(|c| {
            c.iter()
                .any(|c| c["type"] == type_ && c["status"] == "True")
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traefik_accepts_its_gateway_class_and_programs_the_gateway() -> anyhow::Result<()> {
    let test = "traefik_accepts_its_gateway_class_and_programs_the_gateway";
    let Some(cluster) = cluster_or_skip(test).await? else {
        return Ok(());
    };
    tokio::task::block_in_place(|| install_gateway_api(&cluster)).context("Gateway API CRDs")?;
    let ns = cluster.namespace("edge").await?;
    let dir = tempfile::tempdir()?;
    let traefik =
        tokio::task::block_in_place(|| Traefik::start(&cluster, &[ns.name()], dir.path(), &[]))
            .context("Traefik")?;
    let class = apply_traefik_gateway(&ns, &cluster, &traefik).await?;
    let classes: Api<DynamicObject> = Api::all_with(
        cluster.client(),
        &gateway_api("GatewayClass", "gatewayclasses"),
    );
    let gateways: Api<DynamicObject> = Api::namespaced_with(
        cluster.client(),
        ns.name(),
        &gateway_api("Gateway", "gateways"),
    );
    let accepted =
        poll(
            "Traefik accepting its GatewayClass",
            Duration::from_secs(60),
            || {
                let (classes, class) = (classes.clone(), class.clone());
                async move {
                    Ok(Some(classes.get(&class).await?).filter(|c| condition_true(c, "Accepted")))
                }
            },
        )
        .await;
    let programmed = match accepted {
        Ok(_) => {
            poll("the Gateway Programmed", Duration::from_secs(60), || {
                let gateways = gateways.clone();
                async move {
                    Ok(Some(gateways.get("edge").await?)
                        .filter(|g| condition_true(g, "Programmed")))
                }
            })
            .await
        }
        Err(e) => Err(e),
    };
    let gateway = match programmed {
        Ok(g) => g,
        Err(e) => anyhow::bail!("{e}\nTraefik's log:\n{}", traefik.log_text()),
    };
    // Traefik reports where it listens (its status address).
    assert_eq!(
        gateway.data["status"]["addresses"][0]["value"], "127.0.0.1",
        "{:?}",
        gateway.data["status"]
    );
    let _ = classes.delete(&class, &Default::default()).await;
    ns.cleanup().await?;
    Ok(())
}
