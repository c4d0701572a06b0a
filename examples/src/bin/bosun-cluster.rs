//! The reference cluster. Until the component crates land it prints the crate map; the
//! reference-cluster issue turns it into the cluster itself.

fn main() {
    println!("bosun: Kubernetes' control plane as a Rust library\n");
    for (krate, what) in [
        ("bosun-core", "object model, Client trait, watch machinery"),
        ("bosun-store", "Storage trait and backends, API semantics, REST server"),
        ("bosun-scheduler", "scheduling framework, default plugins, queue, preemption"),
        ("bosun-controllers", "controller runtime and built-in controllers"),
        ("bosun-runtime", "ContainerRuntime trait, backends, node agent"),
        ("bosun-netproxy", "service proxy backends, ingress, cluster DNS"),
    ] {
        println!("  {krate:<18} {what}");
    }
}
