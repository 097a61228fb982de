/**
 * Labels on every container Vulcan makes, for reconciliation: start-up clean-up finds its
 * own containers by them, scoped to the node's data dir.
 */

/** Every Vulcan container. */
export const LABEL_MANAGED = 'dev.vulcan.managed';
/** A workload's container (its value is the workload id). */
export const LABEL_WORKLOAD = 'dev.vulcan.workload';
/** A warm pool container. */
export const LABEL_POOL = 'dev.vulcan.pool';
/** The data dir tag of the node that made a container: start-up clean-up removes only its own. */
export const LABEL_NODE = 'dev.vulcan.node';
/** A sandbox's container (its value is the sandbox id). Workload clean-up leaves these to the sandbox driver. */
export const LABEL_SANDBOX = 'dev.vulcan.sandbox';
