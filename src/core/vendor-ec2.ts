// The part of @aws-sdk/client-ec2 that eni-dpdk calls, for core/lazy.ts to import on first use.
// Named re-exports let the bundler drop the rest: the package's index (every EC2 command and the
// aggregated `EC2` client, which builds itself at load) made a 1.47 MB chunk, these 0.81 MB, and
// loading it takes 160 -> 100 ms of CPU on Node 20.
export {
  AttachNetworkInterfaceCommand,
  CreateNetworkInterfaceCommand,
  DeleteNetworkInterfaceCommand,
  DescribeInstancesCommand,
  DescribeInstanceTypesCommand,
  DescribeNetworkInterfacesCommand,
  DescribeSecurityGroupsCommand,
  DescribeSubnetsCommand,
  DescribeTagsCommand,
  EC2Client,
  ModifyNetworkInterfaceAttributeCommand,
} from "@aws-sdk/client-ec2";
