# What outrider needs from Consul for the service "echo", and nothing more:
# register, heartbeat, maintenance and deregister its own instances (service
# write), and watch healthy instances for /v1/peers (service and node read).
#
#   consul acl policy create -name outrider-echo -rules @acl-policy.hcl
#   consul acl token create -policy-name outrider-echo -description "outrider for echo"
#   kubectl create secret generic outrider-consul-token --from-literal=token=<SecretID>
service "echo" {
  policy = "write"
}

service_prefix "" {
  policy = "read"
}

node_prefix "" {
  policy = "read"
}
