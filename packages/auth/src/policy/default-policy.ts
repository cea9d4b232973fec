/**
 * The default policy of the Nubes SDK's actions with Keystone's reader / member / admin personas:
 * readers see a project's resources, members change them, project admins manage the project's role
 * assignments, and the cloud admin (`admin` on the system scope) does everything. Deployments override
 * entries with {@link Policy.extend}.
 */
export const DEFAULT_POLICY_RULES: Readonly<Record<string, string>> = {
  // Personas.
  cloud_admin: 'role:admin and system_scope:all',
  cloud_reader: 'role:reader and system_scope:all',
  project_reader: 'role:reader and project_id:%(target.project_id)s',
  project_member: 'role:member and project_id:%(target.project_id)s',
  project_admin: 'role:admin and project_id:%(target.project_id)s',
  domain_admin: 'role:admin and domain_id:%(target.domain_id)s',
  owner: 'user_id:%(target.user_id)s',
  reader_or_admin: 'rule:project_reader or rule:cloud_reader or rule:cloud_admin',
  member_or_admin: 'rule:project_member or rule:cloud_admin',
  admin_only: 'rule:cloud_admin',
  default: 'rule:cloud_admin',

  // Compute.
  'compute:servers:list': 'rule:reader_or_admin',
  'compute:servers:get': 'rule:reader_or_admin',
  'compute:servers:create': 'rule:member_or_admin',
  'compute:servers:update': 'rule:member_or_admin',
  'compute:servers:delete': 'rule:member_or_admin',
  'compute:servers:start': 'rule:member_or_admin',
  'compute:servers:stop': 'rule:member_or_admin',
  'compute:servers:resize': 'rule:member_or_admin',
  'compute:servers:migrate': 'rule:admin_only',
  'compute:servers:live_migrate': 'rule:admin_only',
  'compute:hosts:*': 'rule:admin_only',
  'compute:flavors:list': '@',
  'compute:flavors:get': '@',
  'compute:flavors:*': 'rule:admin_only',

  // Image.
  'image:images:list': 'rule:reader_or_admin',
  'image:images:get': "rule:reader_or_admin or 'public':%(target.visibility)s",
  'image:images:create': 'rule:member_or_admin',
  'image:images:update': 'rule:member_or_admin',
  'image:images:delete': 'rule:member_or_admin',
  'image:images:publicize': 'rule:admin_only',

  // Network.
  'network:networks:list': 'rule:reader_or_admin',
  'network:networks:get': 'rule:reader_or_admin',
  'network:networks:create': 'rule:member_or_admin',
  'network:networks:update': 'rule:member_or_admin',
  'network:networks:delete': 'rule:member_or_admin',
  'network:networks:create_shared': 'rule:admin_only',
  'network:subnets:*': 'rule:member_or_admin',
  'network:routers:*': 'rule:member_or_admin',
  'network:ports:*': 'rule:member_or_admin',
  'network:security_groups:list': 'rule:reader_or_admin',
  'network:security_groups:*': 'rule:member_or_admin',

  // Quota.
  'quota:limits:get': 'rule:reader_or_admin',
  'quota:usage:get': 'rule:reader_or_admin',
  'quota:limits:set': 'rule:admin_only',
  'quota:reservations:*': 'rule:member_or_admin',

  // Identity.
  'identity:domains:*': 'rule:admin_only',
  'identity:projects:get': 'rule:reader_or_admin or rule:domain_admin',
  'identity:projects:*': 'rule:admin_only or rule:domain_admin',
  'identity:users:get': 'rule:owner or rule:admin_only or rule:domain_admin',
  'identity:users:*': 'rule:admin_only or rule:domain_admin',
  'identity:groups:*': 'rule:admin_only or rule:domain_admin',
  'identity:roles:list': 'rule:reader_or_admin',
  'identity:roles:*': 'rule:admin_only',
  'identity:role_assignments:list': 'rule:reader_or_admin or rule:domain_admin',
  'identity:role_assignments:create': 'rule:project_admin or rule:domain_admin or rule:cloud_admin',
  'identity:role_assignments:delete': 'rule:project_admin or rule:domain_admin or rule:cloud_admin',
  // Holders of this may assign roles they do not hold themselves (escalation prevention applies to the rest).
  'identity:role_assignments:any_role': 'rule:cloud_admin',
  'identity:tokens:validate': 'rule:owner or rule:cloud_admin or rule:cloud_reader',
  'identity:tokens:revoke': 'rule:owner or rule:cloud_admin',
  'identity:application_credentials:*': 'rule:owner or rule:cloud_admin',
  'identity:access_keys:*': 'rule:owner or rule:cloud_admin',
  'identity:revocations:list': '@',
  'identity:jwks:get': '@',
};
