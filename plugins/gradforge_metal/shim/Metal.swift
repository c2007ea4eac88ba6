// Metal.swift — a type-checking stand-in for the part of Apple's Metal framework that
// gradforge's generated Swift host code uses, so that the host code can be type-checked on
// Linux (`swiftc -emit-module -module-name Metal Metal.swift`, then `swiftc -typecheck -I …`).
// Signatures follow the Swift overlay of Metal (macOS 12 / iOS 15 SDKs); nothing here runs:
// every entry point traps. The real SDK check happens on macOS (.github/workflows/metal-macos.yml).
import Foundation

public struct MTLSize {
    public var width: Int
    public var height: Int
    public var depth: Int
    public init(width: Int, height: Int, depth: Int) {
        self.width = width
        self.height = height
        self.depth = depth
    }
}

public struct MTLResourceOptions: OptionSet {
    public let rawValue: UInt
    public init(rawValue: UInt) { self.rawValue = rawValue }
    public static let storageModeShared: MTLResourceOptions = []
    public static let storageModeManaged = MTLResourceOptions(rawValue: 16)
    public static let storageModePrivate = MTLResourceOptions(rawValue: 32)
}

public enum MTLLanguageVersion: UInt {
    case version2_3 = 131075
    case version2_4 = 131076
    case version3_0 = 196608
}

public enum MTLCommandBufferStatus: UInt {
    case notEnqueued, enqueued, committed, scheduled, completed, error
}

open class MTLCompileOptions {
    public init() {}
    open var languageVersion: MTLLanguageVersion = .version2_4
    open var fastMathEnabled: Bool = true
    open var preprocessorMacros: [String: NSObject]? = nil
}

public protocol MTLFunction: AnyObject {
    var name: String { get }
}

public protocol MTLLibrary: AnyObject {
    func makeFunction(name functionName: String) -> MTLFunction?
    var functionNames: [String] { get }
}

public protocol MTLComputePipelineState: AnyObject {
    var maxTotalThreadsPerThreadgroup: Int { get }
    var threadExecutionWidth: Int { get }
}

public protocol MTLResource: AnyObject {
    var label: String? { get set }
}

public protocol MTLBuffer: MTLResource {
    func contents() -> UnsafeMutableRawPointer
    var length: Int { get }
}

public protocol MTLCommandEncoder: AnyObject {
    func endEncoding()
}

public protocol MTLComputeCommandEncoder: MTLCommandEncoder {
    func setComputePipelineState(_ state: MTLComputePipelineState)
    func setBuffer(_ buffer: MTLBuffer?, offset: Int, index: Int)
    func setBytes(_ bytes: UnsafeRawPointer, length: Int, index: Int)
    func dispatchThreadgroups(_ threadgroupsPerGrid: MTLSize, threadsPerThreadgroup: MTLSize)
    func dispatchThreads(_ threadsPerGrid: MTLSize, threadsPerThreadgroup: MTLSize)
}

public protocol MTLCommandBuffer: AnyObject {
    func makeComputeCommandEncoder() -> MTLComputeCommandEncoder?
    func commit()
    func waitUntilCompleted()
    var status: MTLCommandBufferStatus { get }
    var error: Error? { get }
}

public protocol MTLCommandQueue: AnyObject {
    func makeCommandBuffer() -> MTLCommandBuffer?
}

public protocol MTLDevice: AnyObject {
    var name: String { get }
    func makeCommandQueue() -> MTLCommandQueue?
    func makeLibrary(source: String, options: MTLCompileOptions?) throws -> MTLLibrary
    func makeLibrary(URL url: URL) throws -> MTLLibrary
    func makeDefaultLibrary() -> MTLLibrary?
    func makeDefaultLibrary(bundle: Bundle) throws -> MTLLibrary
    func makeComputePipelineState(function computeFunction: MTLFunction) throws
        -> MTLComputePipelineState
    func makeBuffer(length: Int, options: MTLResourceOptions) -> MTLBuffer?
    func makeBuffer(bytes pointer: UnsafeRawPointer, length: Int,
                    options: MTLResourceOptions) -> MTLBuffer?
    func makeBuffer(bytesNoCopy pointer: UnsafeMutableRawPointer, length: Int,
                    options: MTLResourceOptions,
                    deallocator: ((UnsafeMutableRawPointer, Int) -> Void)?) -> MTLBuffer?
}

public func MTLCreateSystemDefaultDevice() -> MTLDevice? {
    fatalError("the Metal stub cannot run anything")
}
