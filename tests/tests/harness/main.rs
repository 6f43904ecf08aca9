//! Checks of the workspace and of the test harness: the architecture's dependency and layering
//! rules, the real control plane's API behaviour the operator relies on, the harness itself
//! (namespaces, ServiceAccount access), and the real kubelet node with our images. One test
//! binary: each file of this folder is a module.

mod architecture;
mod control_plane;
mod edge;
mod itself;
mod real_node;
