// What the tests run against, from the environment tests/clients/test_typescript.py sets:
// a migrated database, a running API on it, and workers of the service and of the example.
export function required(name: string): string {
  const value = process.env[name];
  if (value === undefined || value === "") {
    throw new Error(`${name} is not set: run these tests through tests/clients/test_typescript.py`);
  }
  return value;
}

export const databaseUrl = (): string => required("DATABASE_URL");
export const apiUrl = (): string => required("STORYBOARD_API_URL");
export const apiToken = (): string => required("STORYBOARD_API_TOKEN");
