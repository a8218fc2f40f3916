package register

import (
	"errors"

	consul "github.com/hashicorp/consul/api"
)

// Agent is what a Registrar needs of the local Consul agent's API.
// *consul.Agent (client.Agent()) has it; tests pass a fake.
type Agent interface {
	ServiceRegisterOpts(reg *consul.AgentServiceRegistration, opts consul.ServiceRegisterOpts) error
	UpdateTTLOpts(checkID, output, status string, q *consul.QueryOptions) error
	ServiceDeregisterOpts(serviceID string, q *consul.QueryOptions) error
	EnableServiceMaintenanceOpts(serviceID, reason string, q *consul.QueryOptions) error
	DisableServiceMaintenanceOpts(serviceID string, q *consul.QueryOptions) error
}

// isNotFound reports whether Consul answered that the service or check is unknown.
func isNotFound(err error) bool {
	var se consul.StatusError
	return errors.As(err, &se) && se.Code == 404
}
