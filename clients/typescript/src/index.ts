// herald-ws: the browser (and Node) client of Herald.

export {
  HeraldClient,
  HeraldError,
  SUBPROTOCOL,
  jwtExp,
  type ClientEvents,
  type CloseInfo,
  type Cursor,
  type HeraldClientOptions,
  type RawFrame,
  type ReconnectOptions,
  type ResetInfo,
  type Status,
  type StorageLike,
  type SyncedInfo,
  type TicketProvider,
  type TokenProvider,
  type WebSocketConstructor,
  type WebSocketLike,
} from "./client.js";
export { RunTracker, type Run, type RunListener, type RunState, type ToolCall } from "./runs.js";
export * from "./types.js";
