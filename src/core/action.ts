// The plan's vocabulary: what a stage says it will do. Stages and the host layer's planners speak
// it; `plan` prints it.
export type StageName = "eni" | "kubelet" | "host" | "sriov" | "nodeeni";

export type ActionKind =
  | "create"
  | "adopt"
  | "attach"
  | "wait-attached"
  | "set-delete-on-termination"
  | "set-ena-express"
  | "set-source-dest-check"
  | "wait-nic"
  | "wait-external"
  | "use-external"
  | "forget"
  | "recover"
  | "load-module"
  | "enable-noiommu"
  | "hugepages"
  | "write-networkd"
  | "bind"
  | "unbind"
  | "set-mtu"
  | "link-up"
  | "move-aside"
  | "write-sriov"
  | "write-max-pods"
  | "remove-max-pods"
  | "patch-status";

export interface Action {
  stage: StageName;
  kind: ActionKind;
  /** what it acts on: ENI name, BDF, file path */
  target: string;
  /** one human line: why and what exactly */
  detail: string;
}

export function formatActions(actions: Action[]): string {
  if (actions.length === 0) return "nothing to do: the node matches the desired state\n";
  const w = Math.max(...actions.map((a) => a.kind.length));
  return (
    actions
      .map((a) => `  ${a.stage.padEnd(7)} ${a.kind.padEnd(w)}  ${a.target}  ${a.detail}`)
      .join("\n") + "\n"
  );
}
