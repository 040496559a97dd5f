// herald-ws/ai-sdk: use Herald as the AI SDK's chat transport (`useChat({ transport })`).
// Needs the `ai` package (an optional peer dependency); only its types are imported.

export { HeraldChatTransport, type HeraldChatTransportOptions, type OutgoingMessage, type SendVia } from "./transport.js";
export { RunChunkMapper, type ChunkMapperOptions } from "./chunks.js";
