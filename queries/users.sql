-- name: get_user
-- One user by id; no row means 404.
SELECT id, name, email, rfc3339(created_at) AS created_at
  FROM users
 WHERE id = %(user_id)s;
