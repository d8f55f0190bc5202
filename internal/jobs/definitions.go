package jobs

import (
	"context"

	"github.com/switchboard-hub/switchboard/internal/store"
)

// Saved test definitions (docs/jobs.md, "Saved test definitions"): the
// store keeps them, versioned per name; the UWS binding reads and writes
// their specs and starts jobs from them with Create (Spec.Definition).

// SaveDefinition stores d as the next version of its name.
func (m *Manager) SaveDefinition(ctx context.Context, d store.Definition) (store.Definition, error) {
	if d.CreatedAt.IsZero() {
		d.CreatedAt = m.cfg.Now()
	}
	d, err := m.st.PutDefinition(ctx, d)
	if err == nil {
		m.log.Info("jobs: definition saved", "definition", d.Name, "version", d.Version, "owner", d.Owner)
	}
	return d, err
}

// Definition reads a version of a definition (0: the newest;
// store.ErrNotFound if there is none).
func (m *Manager) Definition(ctx context.Context, name string, version int) (store.Definition, error) {
	return m.st.Definition(ctx, name, version)
}

// DefinitionVersions lists the versions of a definition, oldest first.
func (m *Manager) DefinitionVersions(ctx context.Context, name string) ([]store.Definition, error) {
	return m.st.DefinitionVersions(ctx, name)
}

// Definitions lists the newest version of each definition of owner (""
// for every owner).
func (m *Manager) Definitions(ctx context.Context, owner string) ([]store.Definition, error) {
	return m.st.Definitions(ctx, owner)
}
