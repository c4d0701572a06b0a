//! The container runtime trait with its backends, and the node agent that runs pods on a node.
